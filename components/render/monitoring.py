"""Where the metrics scrapers run, once for every NetworkPolicy that admits them (Ray's pods, our tier).

Owns the namespace of Managed Prometheus's collectors on GKE. Does not own which ports a policy
opens to them (each renderer knows its pods' metrics ports) nor what they scrape (PodMonitoring,
components/render/rayservice.py).
"""

from __future__ import annotations

# The cluster turns on GKE's managed collection (monitoringConfig.managedPrometheus), and GKE runs
# its collector DaemonSet in `gke-gmp-system`. `gmp-system` is where the self-deployed operator
# runs (GoogleCloudPlatform/prometheus-engine manifests/operator.yaml) and where GKE attached /
# multi-cloud clusters run it; on GKE nothing runs there, so admitting it admits no scraper. The
# collectors are ordinary pods (the manifest's collector DaemonSet, `app.kubernetes.io/name:
# collector`, sets no hostNetwork), so a namespaceSelector admits them.
MONITORING_NAMESPACE = "gke-gmp-system"
