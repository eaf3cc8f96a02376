"""capacityd's output side: Prometheus exposition, the weekly report and its email."""
