"""The results layer: verified per-task tables (pandas) and figures (matplotlib) from what is on disk."""
from report.build import add_arguments, report_run, require_results, tasks_on_disk, write_report
from report.methods import method_label

__all__ = ["add_arguments", "report_run", "require_results", "tasks_on_disk", "write_report", "method_label"]
