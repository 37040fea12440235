"""Gets a token from one of `iewatch simulate`'s secret-less identities the way Azure's
own Python client does, then reads a job with it. The identity is found from the
environment exactly as on Azure (AZURE_POD_IDENTITY_AUTHORITY_HOST for IMDS,
IDENTITY_ENDPOINT + IDENTITY_HEADER for App Service, the AZURE_* workload identity
variables); only the simulator's CA is trusted.

Arguments: mode (imds, user_assigned, app_service, workload), ARM endpoint, CA file,
subscription, resource group, job[, user-assigned client id]. Prints one JSON line:
{"expires_in": seconds, "status": HTTP status of Get Job}.
"""
import json
import ssl
import sys
import time
import urllib.request

from azure.identity import ManagedIdentityCredential, WorkloadIdentityCredential

mode, endpoint, ca, subscription, group, job = sys.argv[1:7]
if mode == "workload":
    credential = WorkloadIdentityCredential(
        disable_instance_discovery=True, connection_verify=ca
    )
elif mode == "user_assigned":
    credential = ManagedIdentityCredential(client_id=sys.argv[7])
else:
    credential = ManagedIdentityCredential()
token = credential.get_token("https://management.azure.com/.default")
url = (
    f"{endpoint}/subscriptions/{subscription}/resourceGroups/{group}"
    f"/providers/Microsoft.ImportExport/jobs/{job}?api-version=2021-01-01"
)
request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token.token}"})
context = ssl.create_default_context(cafile=ca)
with urllib.request.urlopen(request, context=context) as response:
    status = response.status
print(json.dumps({"expires_in": token.expires_on - int(time.time()), "status": status}))
