"""The block devices the initiators create on a dom0: one spelling each.

What the engine waits for after a login (`Target.device`), what the SCSI
reservations are taken on, and what the lab's initiators and xl configs name
all come from here.
"""


def iscsi_device(host: str, port: int, iqn: str, lun: int = 1) -> str:
    """The udev by-path name open-iscsi gives a LUN's block device.

    >>> iscsi_device('192.0.2.5', 3260, 'iqn.2026-01.org.example:web1')
    '/dev/disk/by-path/ip-192.0.2.5:3260-iscsi-iqn.2026-01.org.example:web1-lun-1'
    """
    return f'/dev/disk/by-path/ip-{host}:{port}-iscsi-{iqn}-lun-{lun}'


def aoe_device(shelf: int, slot: int) -> str:
    """The aoe driver's block device for eSHELF.SLOT.

    >>> aoe_device(1, 2)
    '/dev/etherd/e1.2'
    """
    return f'/dev/etherd/e{shelf}.{slot}'
