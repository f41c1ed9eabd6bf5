"""The Golem node agent (``hivemind-node``) and the node protocol it shares with the hub."""
