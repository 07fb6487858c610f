"""The write API: the only way anything in Oculus is changed (SPEC §8)."""
