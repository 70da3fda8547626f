"""flows.base.TrainpipeFlow: parameters reach the API as Prefect's own encoder would send them, without fastapi."""

from __future__ import annotations

import subprocess
import sys

from fastapi.encoders import jsonable_encoder
from prefect import Flow

from flows.train import train_flow
from trainpipe.spec import parse_spec


def _spec():
    return parse_spec({"name": "m", "data": {"uris": ["data/penguins.csv", "s3://bucket/more.csv"]}, "target": "species",
                       "features": {"derived": [{"name": "r", "expr": "a / b"}]}, "tuning": {"trials": 5},
                       "xgboost": {"extra_params": {"max_cat_to_onehot": 8, "grow_policy": "lossguide"}}},
                      source="test")


def test_a_spec_and_a_trigger_serialise_as_jsonable_encoder_does():
    spec = _spec()
    trigger = {"event": "trainpipe.data.arrived", "resource": {"uri": "s3://b/k.csv"}, "size": 3, "seen": [1.5, None]}
    for parameters in ({"spec": spec, "trigger": trigger}, {"spec": spec, "trigger": None}):
        ours = train_flow.serialize_parameters(parameters)
        assert ours == {k: jsonable_encoder(v) for k, v in parameters.items()}
        assert ours["spec"]["data"]["uris"] == ["data/penguins.csv", "s3://bucket/more.csv"]


def test_other_values_take_prefects_own_path():
    class Opaque:
        pass

    parameters = {"spec": _spec(), "trigger": Opaque()}
    assert train_flow.serialize_parameters(parameters) == Flow.serialize_parameters(train_flow, parameters)


def test_a_flow_call_imports_no_fastapi_until_the_api_needs_it():
    code = ("import sys, flows.train; from trainpipe.spec import parse_spec; "
            "spec = parse_spec({'name': 'm', 'data': {'uris': ['x.csv']}, 'target': 'y'}, source='t'); "
            "flows.train.train_flow.serialize_parameters({'spec': spec, 'trigger': None}); "
            "print('fastapi' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
