"""Blue/green index versions: aliases that name the live physical namespace (``aliases``), and promotion gated by
evaluation (``promotion``)."""
