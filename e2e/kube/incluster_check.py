#!/usr/bin/env python3
"""In-cluster API access as a pod sees it (image `e2e/incluster-check` in e2e/tests/test_kube_agent.py):
reads the ServiceAccount token, CA and namespace at the standard paths, as kube-rs and client-go
do, lists the pods of its namespace at https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT
with them (the CA must verify the apiserver's certificate for that address) and exits 0 on 200,
1 otherwise. Standard library only."""

import json
import os
import ssl
import sys
import urllib.error
import urllib.request

SA = "/var/run/secrets/kubernetes.io/serviceaccount"


def main():
    token = open(f"{SA}/token").read().strip()
    ns = open(f"{SA}/namespace").read().strip()
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
    if ":" in host:
        host = f"[{host}]"
    url = f"https://{host}:{port}/api/v1/namespaces/{ns}/pods"
    ctx = ssl.create_default_context(cafile=f"{SA}/ca.crt")
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
    try:
        with opener.open(req, timeout=10) as r:
            pods = [p["metadata"]["name"] for p in json.load(r)["items"]]
            print(f"GET {url}: {r.status}; pods {pods}", flush=True)
            return 0 if r.status == 200 else 1
    except urllib.error.HTTPError as e:
        print(f"GET {url}: {e.code} {e.read()[:300]!r}", flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
