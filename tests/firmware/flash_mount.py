# The emulated flash (emulator/board/blockdev.py) mounted as the board mounts it, for the MicroPython case
# scripts (clog_cases.py, store_cases.py, ota_cases.py). Runs on the VM.
import os

from blockdev import BlockDev


def mount(bd, mnt):
    """Mount LittleFS on bd at mnt, unmounting what was there first (a reboot after a power cut)."""
    try:
        os.umount(mnt)
    except OSError:
        pass
    os.mount(os.VfsLfs2(bd), mnt)


def fresh(mnt, block_size=4096, block_count=32):
    """A new flash, formatted and mounted at mnt."""
    bd = BlockDev(None, block_size=block_size, block_count=block_count)
    os.VfsLfs2.mkfs(bd)
    mount(bd, mnt)
    return bd
