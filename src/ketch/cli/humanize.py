"""Human-readable durations and sizes, formatted as the docker CLI formats them.

Scripts parse ``docker ps`` and ``docker images`` output, so the thresholds and units
follow docker's (the go-units package): sizes in decimal units (kB = 1000 bytes), and
"About a minute", "3 hours", "2 weeks" for durations.
"""

from __future__ import annotations

_SIZE_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB")


def human_duration(seconds: float) -> str:
    """Describe a duration roughly: "Less than a second", "5 minutes", "3 weeks"."""
    whole_seconds = int(seconds)
    if whole_seconds < 1:
        return "Less than a second"
    if whole_seconds == 1:
        return "1 second"
    if whole_seconds < 60:
        return f"{whole_seconds} seconds"
    minutes = whole_seconds // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def human_size(size: float, precision: int = 3) -> str:
    """Format a byte count with ``precision`` significant digits: "4.26MB", "812B"."""
    unit = 0
    while size >= 1000 and unit < len(_SIZE_UNITS) - 1:
        size /= 1000
        unit += 1
    text = f"{size:.{precision}g}"
    # Rounding can reach the next unit (999.9 kB at 3 digits is "1e+03"); show 1 MB then.
    if "e" in text and unit < len(_SIZE_UNITS) - 1:
        return f"1{_SIZE_UNITS[unit + 1]}"
    return f"{text}{_SIZE_UNITS[unit]}"


def truncate(text: str, width: int) -> str:
    """Shorten ``text`` to ``width`` characters, ending in "…" when cut."""
    if len(text) <= width:
        return text
    return text[: width - 1] + "…"
