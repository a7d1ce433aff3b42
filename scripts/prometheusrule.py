#!/usr/bin/env python3
"""Writes deploy/kubernetes/prometheusrule.yaml: the rules of deploy/prometheus/alerts.yml
as a Prometheus Operator PrometheusRule. tests/kubernetes.rs checks that the two agree;
run this after changing alerts.yml."""
import pathlib

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
HEADER = """\
# Generated from deploy/prometheus/alerts.yml by scripts/prometheusrule.py: edit
# alerts.yml (which promtool unit-tests) and run the script again. The Prometheus
# Operator loads it when the Prometheus's ruleSelector matches these labels.
"""


def main():
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "policy-push",
            "namespace": "policy-push",
            "labels": {"app.kubernetes.io/name": "policy-push"},
        },
        "spec": {"groups": rules["groups"]},
    }
    text = yaml.safe_dump(resource, sort_keys=False, width=100, allow_unicode=True)
    (ROOT / "deploy/kubernetes/prometheusrule.yaml").write_text(HEADER + text)


if __name__ == "__main__":
    main()
