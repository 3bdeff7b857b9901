#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# Generates python-dump.json: JSON texts and what Python's json.dumps(json.loads(text),
# indent=4, ensure_ascii=False) makes of them, the layout vmm-cli.py writes app-compose.json
# in. tests/unit/test_compose.c checks ds_compose_python_dump against it. Run:
#   python3 tests/vectors/compose/gen-python-dump.py > tests/vectors/compose/python-dump.json
import json

texts = [
    '{"manifest_version":2,"name":"app","allowed_envs":[],"x":{}}',
    '{"b":1,"a":{"d":[3,{"z":true,"y":null}],"c":"x"}}',
    '[1e16,1e15,0.0001,0.00001,1.5,1e2,-0.0,-0,123456789012345678,1e300,5e-324,0.30000000000000004,2.5e-10,-1.25e+20]',
    '{"s":"quote\\" backslash\\\\ nl\\n tab\\t cr\\r bs\\b ff\\f ctl\\u0001\\u001f del\\u007f nul\\u0000 ü 😀 \\u2028"}',
    '{"k":"first","other":1,"k":"last"}',
    '{"nested":[[],[{}],[[1,[2]]]]}',
    '"top-level string"',
    '{"ünï":"cödé","😀":[true,false]}',
]
cases = []
for t in texts:
    cases.append({"json": t, "python": json.dumps(json.loads(t), indent=4, ensure_ascii=False)})
print(json.dumps({"cases": cases}, indent=2))
