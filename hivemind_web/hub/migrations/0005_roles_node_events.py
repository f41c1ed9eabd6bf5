"""Grant the roles what they need on the node audit trail (the roles as defined now)."""

from importlib import import_module

from django.db import migrations

create_roles = import_module("hivemind_web.hub.migrations.0002_roles").create_roles


class Migration(migrations.Migration):
    dependencies = [("hub", "0004_node_events")]
    operations = [migrations.RunPython(create_roles, migrations.RunPython.noop)]
