"""Parses Prometheus text (stdin) with the reference Python parser, prometheus_client, and
prints every family as JSON: {name: {"type": ..., "samples": [[name, labels, value], ...]}}.

A parse error ends the program with a traceback and a non-zero exit code.
"""
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    families = {}
    for family in text_string_to_metric_families(sys.stdin.read()):
        families[family.name] = {
            "type": family.type,
            "samples": [
                [s.name, s.labels, "+Inf" if math.isinf(s.value) else s.value]
                for s in family.samples
            ],
        }
    json.dump(families, sys.stdout)


if __name__ == "__main__":
    main()
