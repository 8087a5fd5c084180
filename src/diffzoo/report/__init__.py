"""Paper tables and plots: published rows beside ours."""
