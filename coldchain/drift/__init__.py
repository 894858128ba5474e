"""The drift test: the matrix file, the runner that builds environments, makes variants and runs
cases, and the reports (JSON, Markdown, JUnit XML; the heatmap is drawn in a container)."""
