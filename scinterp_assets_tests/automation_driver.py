"""The automation sensor as the daemon runs it, for tests: declarative automation evaluated with its cursor
kept from one tick to the next, and what it requests executed, group by group, upstream first."""

from __future__ import annotations

import dagster as dg

from scinterp_assets.defs.automation import REPORT_GROUP, SUMMARY_GROUP, VERDICT_GROUP

AUTOMATED_GROUPS = (SUMMARY_GROUP, VERDICT_GROUP, REPORT_GROUP)  # upstream first


class Automation:
    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance):
        self.defs, self.instance, self.cursor = defs, instance, None

    def __call__(self) -> dict[str, set]:
        """Evaluate and run what is requested until a tick requests nothing; {asset: partitions requested}
        (None for an unpartitioned asset)."""
        requested: dict[str, set] = {}
        graph = self.defs.resolve_asset_graph()
        while True:
            evaluation = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor)
            self.cursor = evaluation.cursor
            if not evaluation.total_requested:
                return requested
            for group in AUTOMATED_GROUPS:
                keys = [key for key in graph.get_all_asset_keys()
                        if graph.get(key).group_name == group and evaluation.get_requested_partitions(key)]
                by_partition: dict = {}
                for key in keys:
                    partitions = evaluation.get_requested_partitions(key)
                    requested.setdefault(key.to_user_string(), set()).update(partitions)
                    for partition in partitions:
                        by_partition.setdefault(partition, []).append(key)
                job = self.defs.resolve_implicit_global_asset_job_def()
                for partition, selection in sorted(by_partition.items(), key=lambda item: str(item[0])):
                    run = job.execute_in_process(instance=self.instance, partition_key=partition,
                                                 asset_selection=selection)
                    assert run.success
