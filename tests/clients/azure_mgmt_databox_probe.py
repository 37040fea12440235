"""Talks to `iewatch simulate`'s Data Box side with Microsoft's own management client,
azure-mgmt-databox, as a user of the Python SDK would: azure-identity for the token,
`jobs.list_by_resource_group` (which follows nextLink pages) and `jobs.get` with
`expand="details"`, each answer deserialised into the SDK's models (the polymorphic
details by their jobDetailsType). Only the simulator's CA is trusted.

Arguments: ARM endpoint, CA file, tenant, client id, secret, subscription, resource group,
job. Prints one JSON line: {"api_version": ..., "list": [...], "get": {...}}.
"""
import json
import sys

from azure.identity import ClientSecretCredential
from azure.mgmt.databox import DataBoxManagementClient

endpoint, ca, tenant, client_id, secret, subscription, group, job = sys.argv[1:9]
scope = "https://management.azure.com/.default"
credential = ClientSecretCredential(
    tenant,
    client_id,
    secret,
    authority=endpoint,
    disable_instance_discovery=True,
    connection_verify=ca,
)
client = DataBoxManagementClient(
    credential,
    subscription,
    base_url=endpoint,
    credential_scopes=[scope],
    connection_verify=ca,
)
listed = [j.name for j in client.jobs.list_by_resource_group(group)]
got = client.jobs.get(group, job, expand="details")
details = got.details
print(json.dumps({
    "api_version": client._config.api_version,
    "list": listed,
    "get": {
        "name": got.name,
        "status": got.status,
        "sku": got.sku.name,
        "details_type": type(details).__name__,
        "stages": [s.stage_name for s in details.job_stages],
        "disks": sorted(p.serial_number for p in details.copy_progress),
        "copy_status": sorted(p.copy_status for p in details.copy_progress),
    },
}))
