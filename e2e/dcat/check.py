#!/usr/bin/env python3
"""Checks an open-data catalogue with the harvester's own code.

Usage: check.py CATALOGUE FORMAT SHAPES, FORMAT `turtle` or `json-ld`.

1. ckanext-dcat's RDFParser (the code CKAN's DCAT harvester runs), with the profile it
   uses unless a site configures another (euro_dcat_ap_3 in ckanext-dcat 2.4.4, which
   extends DCAT-AP 2), parses the catalogue into the dataset dictionaries CKAN would store.
2. pyshacl validates the same graph against the project's DCAT-AP_IT shapes.

Prints one JSON object: {"datasets": [...], "conforms": bool, "report": "..."}; exits 1
when the parse fails (with the error on stderr).
"""

import json
import sys

from ckanext.dcat.processors import RDFParser
from pyshacl import validate
from rdflib import Graph


def main() -> int:
    path, rdf_format, shapes = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(path, encoding="utf-8") as file:
        data = file.read()
    parser = RDFParser(profiles=["euro_dcat_ap_3"])
    parser.parse(data, _format=rdf_format)
    datasets = list(parser.datasets())
    graph = Graph().parse(data=data, format=rdf_format)
    conforms, _, report = validate(
        graph,
        shacl_graph=Graph().parse(shapes, format="turtle"),
        inference="none",
    )
    print(json.dumps({"datasets": datasets, "conforms": conforms, "report": report}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
