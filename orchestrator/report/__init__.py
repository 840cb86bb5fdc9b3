"""Reports from saved results: terminal text, HTML, charts, findings, comparisons."""
