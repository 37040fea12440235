"""Talks to `iewatch simulate` the way Azure's own Python clients do: azure-identity
(MSAL) reads the tenant's discovery document and gets a token for a client secret, and
azure-core's bearer-token pipeline lists and gets Import/Export jobs with it. No shims:
only the simulator's CA is trusted, as a private cloud's would be.

Arguments: ARM endpoint, CA file, tenant, client id, secret, subscription, resource group,
job. Prints one JSON line: {"token": bool, "list": [...], "get": {...}}.
"""
import json
import sys

from azure.core import PipelineClient
from azure.core.pipeline.policies import BearerTokenCredentialPolicy
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest
from azure.identity import ClientSecretCredential

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
token = credential.get_token(scope)
client = PipelineClient(
    base_url=endpoint,
    policies=[BearerTokenCredentialPolicy(credential, scope)],
    transport=RequestsTransport(connection_verify=ca),
)
jobs = f"{endpoint}/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.ImportExport/jobs"
listed = client.send_request(HttpRequest("GET", f"{jobs}?api-version=2021-01-01"))
listed.raise_for_status()
got = client.send_request(HttpRequest("GET", f"{jobs}/{job}?api-version=2021-01-01"))
got.raise_for_status()
print(json.dumps({
    "token": bool(token.token),
    "list": [j["name"] for j in listed.json()["value"]],
    "get": {"name": got.json()["name"], "state": got.json()["properties"]["state"]},
}))
