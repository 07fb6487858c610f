// The login page is served in place of any page asked for without a session: log in,
// then come back to that page.
document.addEventListener("DOMContentLoaded", () => {
  const here = location.pathname + location.search + location.hash;
  const next = document.querySelector("input[name=next]");
  if (next && location.pathname !== "/login.html") next.value = here;
  if (new URLSearchParams(location.search).get("failed")) {
    document.querySelector(".failed").hidden = false;
  }
});
