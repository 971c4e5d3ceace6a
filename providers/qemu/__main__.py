"""``python -m providers.qemu [ALIAS] --image-dir DIR``: build the guest image (``make qemu-image``)."""

from providers.qemu.image import main

main()
