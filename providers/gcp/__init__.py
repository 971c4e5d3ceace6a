"""The GCP (Compute Engine) provider of onebox: one onebox instance is one Compute Engine VM.

``GcpProvider(GcpConfig(...))`` implements ``providers.base.Provider`` with
google-cloud-compute over REST; it is tested against the local GCE fake
(``tests/fakes/gce.py``, ``tests/providers/test_gcp.py``). Importing
``providers`` alone does not import the google libraries; building a
``GcpProvider`` does.

* ``config``   – ``GcpConfig``, the provider's settings (no credentials: Application Default Credentials);
* ``provider`` – ``GcpProvider`` itself: instances (stop/start/reboot included), snapshots, catalog, listing;
* ``mapping``  – pure Compute Engine vocabulary: status maps, image families, names, labels, resource paths;
* ``errors``   – API exceptions and failed operations mapped to the typed provider errors.
"""

from providers.gcp.config import GcpConfig
from providers.gcp.provider import GcpProvider

__all__ = ["GcpConfig", "GcpProvider"]
