"""Tasks: what a job trains and evaluates (batch spec, loss, metrics, evaluator) on the shared loop."""
