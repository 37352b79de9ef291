#!/usr/bin/env python3
"""Runs the independent SCIM conformance checker `scim2-tester` against a SCIM endpoint.

usage: conformance.py <endpoint URL> (--token TOKEN | --basic USER:PASSWORD)

Prints every check that did not succeed, then a summary line per status, and exits 1
if any check failed or errored.
"""

import argparse
import base64
import collections
import sys

from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    auth = parser.add_mutually_exclusive_group(required=True)
    auth.add_argument("--token")
    auth.add_argument("--basic")
    args = parser.parse_args()
    if args.token:
        header = f"Bearer {args.token}"
    else:
        header = "Basic " + base64.b64encode(args.basic.encode()).decode()
    http = Client(base_url=args.url, headers={"Authorization": header}, timeout=30)
    client = SyncSCIMClient(http)
    results = check_server(client, raise_exceptions=False)
    counts = collections.Counter()
    for r in results:
        counts[r.status.name] += 1
        if r.status not in (Status.SUCCESS, Status.SKIPPED):
            where = f"{r.resource_type or '-'} {r.title}"
            print(f"{r.status.name:8} {where}: {r.reason}")
    for r in results:
        if r.status == Status.SKIPPED:
            print(f"SKIPPED  {r.resource_type or '-'} {r.title}: {r.reason}")
    summary = ", ".join(f"{n} {k.lower()}" for k, n in sorted(counts.items()))
    print(f"scim2-tester summary: {len(results)} checks: {summary}")
    bad = sum(n for k, n in counts.items() if k not in ("SUCCESS", "SKIPPED"))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
