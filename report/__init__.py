"""The results layer: verified per-task tables (pandas) and figures (matplotlib) from what is on disk, and the
report across seeds."""
from report.across_seeds import write_seeds_report
from report.build import add_arguments, report_run, require_results, tasks_on_disk, write_report
from report.methods import method_label

__all__ = ["add_arguments", "report_run", "require_results", "tasks_on_disk", "write_report", "write_seeds_report",
           "method_label"]
