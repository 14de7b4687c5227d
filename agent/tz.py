"""The site's time zone: readings are stored in UTC and shown, summed by day and exported in Thai time."""

from datetime import timedelta, timezone

THAILAND = timezone(timedelta(hours=7), "ICT")
