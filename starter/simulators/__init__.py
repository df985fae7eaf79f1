"""The Jenkins, GitHub and Slack simulators: real HTTP servers on 127.0.0.1 that speak the real APIs.

`deployctl dev` and `demo` (starter/devstack.py) run them, bench/ measures against them and the tests
drive the real clients (python-jenkins, PyGithub, slack_sdk) through them. They are part of the
product, so nothing here imports `tests`.
"""
