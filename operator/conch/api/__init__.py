"""The ModelDeployment API: typed models (types), CEL rules (rules) and the CRD generator (crdgen)."""
