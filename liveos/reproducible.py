"""``SOURCE_DATE_EPOCH`` (reproducible-builds.org): one reading for every writer.

The CPIO writer, the ISO writer, the EFI image, the PXE archive, the state file and the default
label all clamp or derive their timestamps from it, so they must agree on what it means.
"""

from __future__ import annotations

import os

from liveos.errors import UsageError


def source_date_epoch() -> int | None:
    """``$SOURCE_DATE_EPOCH`` in seconds; None when unset or empty; malformed: a usage error."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    try:
        epoch = int(value)
    except ValueError:
        raise UsageError(
            f"SOURCE_DATE_EPOCH={value!r} is not an integer", hint="set it to seconds since 1970 or unset it"
        ) from None
    if epoch < 0:
        raise UsageError(f"SOURCE_DATE_EPOCH={value!r} is negative", hint="use seconds since 1970")
    return epoch
