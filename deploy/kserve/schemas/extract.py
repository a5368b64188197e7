"""Extract the OpenAPI v3 schema of a KServe CRD into the gzipped JSON file the manifest check reads.

Run: $MEDMAE_PYTHON extract.py CRD.yaml OUT.json.gz
Takes the storage version's `schema.openAPIV3Schema` from the CustomResourceDefinition, drops every `description`
(text only; no validation keyword is touched), and writes compact JSON with sorted keys, gzipped without a
timestamp, so the same CRD always gives the same bytes.
"""
import gzip
import json
import sys

import yaml


def strip(node):
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def main(src, out):
    with open(src) as f:
        crd = yaml.safe_load(f)
    versions = [v for v in crd["spec"]["versions"] if v.get("storage")]
    if len(versions) != 1:
        sys.exit(f"{src}: expected one storage version, found {len(versions)}")
    schema = {
        "group": crd["spec"]["group"],
        "kind": crd["spec"]["names"]["kind"],
        "version": versions[0]["name"],
        "openAPIV3Schema": strip(versions[0]["schema"]["openAPIV3Schema"]),
    }
    data = json.dumps(schema, sort_keys=True, separators=(",", ":")).encode()
    with open(out, "wb") as f:
        f.write(gzip.compress(data, mtime=0))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: extract.py CRD.yaml OUT.json.gz")
    main(sys.argv[1], sys.argv[2])
