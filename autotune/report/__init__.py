"""Reports on a study: gathering its figures, its tables, the HTML page."""
