"""The one result channel: every front end reads the same events, and history records every result."""

from __future__ import annotations

from IPython.core.interactiveshell import InteractiveShell

from support.notebooks import ok_cell, run_cell

from jupyter_mlship import history
from jupyter_mlship.events import EVENT_MIME


def displayed_events(shell: InteractiveShell, source: str) -> tuple[list[dict], object]:
    """Run a cell and collect the event bundles it displays (what the lab panel receives)."""
    events: list[dict] = []
    publisher = shell.display_pub
    original = publisher.publish

    def publish(data, metadata=None, *args, **kwargs):
        if EVENT_MIME in data:
            events.append(data[EVENT_MIME])
        return original(data, metadata, *args, **kwargs)

    publisher.publish = publish
    try:
        result = run_cell(shell, source)
    finally:
        publisher.publish = original
    return events, result


def test_panel_events_end_with_one_result_and_history_records_it(ipython):
    ok_cell(ipython, "import numpy as np\nX = np.arange(6.0).reshape(3, 2)")
    events, result = displayed_events(ipython, """
        %%ship summer --sample X --no-verify --events
        def predict(x):
            return x.sum(axis=1)
    """)
    assert result.success
    kinds = [e["event"] for e in events]
    assert kinds[0] == "step" and kinds[-1] == "result" and kinds.count("result") == 1 and "review" in kinds
    final = events[-1]
    assert final["ok"] is True and final["project"].endswith("services/summer") and final["verified"] is False
    [record] = history.list_exports()
    assert (record.name, record.ok, record.project) == ("summer", True, final["project"])


def test_a_failed_export_is_one_failed_result_event_and_a_history_record(ipython):
    ok_cell(ipython, "import numpy as np\nX = np.arange(6.0).reshape(3, 2)")
    events, result = displayed_events(ipython, """
        %%ship broken --sample X --no-verify --events
        def predict(x):
            raise ValueError("no model yet")
    """)
    assert not result.success
    final = events[-1]
    assert final["event"] == "result" and final["ok"] is False and "no model yet" in final["message"]
    [record] = history.list_exports()
    assert record.name == "broken" and record.ok is False and "no model yet" in record.message
