"""Report step: the paper's Appendix G tables, measured side by side on each backend."""

from psdeploy.report.compare import compare_reports
from psdeploy.report.config import ReportConfig, load_report_config, quick_config
from psdeploy.report.render import to_json, write_report
from psdeploy.report.run import ReportData, run_report

__all__ = ["ReportConfig", "ReportData", "compare_reports", "load_report_config", "quick_config", "run_report",
           "to_json", "write_report"]
