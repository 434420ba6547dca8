from __future__ import annotations

from django.apps import AppConfig


class HealthmonConfig(AppConfig):
    name = "healthmon"
    verbose_name = "Health"
    # Every tier sees the health monitor's rows; Operators (and Owners) resolve and
    # ignore fingerprints, triage code findings and start code scans; Owners change
    # its configuration.
    operator_permissions = ("change_fingerprint_state", "triage_finding", "start_scan")

    def ready(self) -> None:
        from controlplane.integrations import register_connection_test
        from controlplane.models import Integration
        from controlplane.status_sections import register_status_section
        from healthmon import code_pull_requests, home_cards, overview
        from healthmon.alerts import rule_audit
        from healthmon.code_consumers import connect_announcements
        from healthmon.code_findings import FIX_CODE_TASK_KIND
        from healthmon.error_source import recent_error_patterns
        from healthmon.railway.connection import check_railway_connection
        from selfheal.error_patterns import register_error_source
        from selfheal.task_kinds import declare_person_kind

        register_error_source(recent_error_patterns)
        declare_person_kind(
            FIX_CODE_TASK_KIND,
            "a person to fix the finding (it closes by itself when a scan finds it fixed)",
        )
        register_connection_test(Integration.Kind.RAILWAY, check_railway_connection)
        rule_audit.connect()
        connect_announcements()
        code_pull_requests.register_waiters()
        register_status_section("errors", overview.status_lines, order=50)
        home_cards.register()  # the errors and code-health cards on Home

    def load_demo(self, owner: object) -> str:
        """`bootstrap --demo`'s hook: the demo service and its log lines, and this
        product's own checkout as a repository to scan."""
        from healthmon.demo import load_demo_logs, register_own_checkout

        return f"{load_demo_logs()}\n{register_own_checkout()}"
