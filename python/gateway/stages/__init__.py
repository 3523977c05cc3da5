"""Pipeline stages. ``build_stages`` turns the config into the ordered list the pipeline runs:
limits → compliance → budget → pii → cache → validate; post hooks run in reverse (validate, cache copy, unmask,
then the output filter sees the answer as the caller would)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.config import Config
from gateway.pipeline import Stage

if TYPE_CHECKING:
    from gateway.app import Gateway


def build_stages(cfg: Config, gw: Gateway) -> list[Stage]:
    from gateway.conversations.threads import ThreadStage

    # first: a continued thread's history is in the request before any other stage looks at it
    stages: list[Stage] = [ThreadStage(gw.conversations)]
    if any(g.strategy == "quality" for g in cfg.models.values()) or cfg.server.categories:
        from gateway.stages.category import CategoryStage

        stages.append(CategoryStage(cfg))  # the task category: what the quality strategy routes by
    st = cfg.stages
    if st.limits.enabled:
        from gateway.stages.limits import LimitsStage

        stages.append(LimitsStage(st.limits, gw.state))
    if st.compliance.enabled:
        from gateway.stages.compliance import ComplianceStage

        pii_cfgs = [
            st.pii,
            *(p.pii for p in st.profiles.values()),
            *(p.pii for p in st.compliance.profiles.values()),
        ]
        ner = next((c.ner for c in pii_cfgs if c is not None and c.ner is not None), None)
        stages.append(ComplianceStage(st.compliance, gw, ner))
    if st.budget.enabled:
        from gateway.stages.budget import BudgetStage

        stages.append(BudgetStage(st.budget, gw.state, gw.router.reachable_targets))
    profiles = {name: p.pii for name, p in st.profiles.items() if p.pii is not None}
    compliance_pii = st.compliance.enabled and any(p.pii is not None for p in st.compliance.profiles.values())
    if st.pii.enabled or compliance_pii or any(p.enabled for p in profiles.values()):
        from gateway.stages.pii import PiiStage

        stages.append(PiiStage(st.pii, profiles, gw.state))
    if st.cache.enabled:
        from gateway.stages.cache import CacheStage

        stages.append(CacheStage(st.cache, cfg))
    if st.validate.enabled:
        from gateway.stages.validate import ValidateStage

        stages.append(ValidateStage(st.validate))
    return stages
