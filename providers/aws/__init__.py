"""The AWS (EC2) provider of onebox: one onebox instance is one EC2 instance.

``AwsProvider(AwsConfig(...))`` implements ``providers.base.Provider`` with
boto3; it is tested against moto's EC2 server (``tests/providers/test_aws.py``).
Importing ``providers`` alone does not import boto3; importing this package does.

* ``config``   – ``AwsConfig``, the provider's settings (no credentials: boto3's chain finds them);
* ``provider`` – ``AwsProvider`` itself: instances (stop/start/reboot included), snapshots (AMIs), catalog, listing;
* ``mapping``  – pure EC2 vocabulary: state maps, image aliases, tags, tokens;
* ``errors``   – EC2 error codes and botocore exceptions mapped to the typed provider errors;
* ``network``  – default VPC and subnet choice, the shared SSH security group.

Its user data is ``providers.cloudinit.cloud_config``, the document every provider boots with.
"""

from providers.aws.config import AwsConfig
from providers.aws.provider import AwsProvider

__all__ = ["AwsConfig", "AwsProvider"]
