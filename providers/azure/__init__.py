"""The Azure provider of onebox: one onebox instance is one Linux VM and the few ARM resources it needs.

``AzureProvider(AzureConfig(...))`` implements ``providers.base.Provider`` with
azure-mgmt-compute, -network and -resource; it is tested against the local ARM
fake (``tests/fakes/arm.py``, ``tests/providers/test_azure.py``). Importing
``providers`` alone does not import the Azure SDK; using an ``AzureProvider`` does.

* ``config``   – ``AzureConfig``, the provider's settings (credentials come from ``DefaultAzureCredential``);
* ``provider`` – ``AzureProvider`` itself: instances (stop/start/reboot included), snapshots, catalog, listing;
* ``mapping``  – pure ARM vocabulary: power and provisioning states, images, resource names and ids;
* ``errors``   – ARM error codes and azure-core exceptions mapped to the typed provider errors.
"""

from providers.azure.config import AzureConfig
from providers.azure.provider import AzureProvider

__all__ = ["AzureConfig", "AzureProvider"]
