"""How much memory this machine has, and sizes in words, for refusing work that cannot fit."""

import os


def physical_memory():
    """This machine's physical memory in bytes (os.sysconf), or None where it cannot be asked."""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return pages * page_size if pages > 0 and page_size > 0 else None


def describe_bytes(n):
    """n bytes in the largest binary unit that keeps the number >= 1: '812 bytes', '3.4 MiB'."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"
