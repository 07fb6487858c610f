"""Dollar amounts as every page writes them, cards, tables and charts alike: one
rounding rule (half a cent up, on integer micros), so a bar reads what its table row
reads."""

from __future__ import annotations

MICROS = 1_000_000


def usd(micros: int | None, signed: bool = False) -> str:
    """12_500_000 → "$12.50"; negative → "−$12.50"; signed adds "+" to gains."""
    if micros is None:
        return "–"
    micros = int(micros)  # sums arrive as Decimal
    cents = (abs(micros) + 5_000) // 10_000
    sign = "" if cents == 0 else ("−" if micros < 0 else ("+" if signed else ""))
    return f"{sign}${cents // 100:,}.{cents % 100:02d}"
