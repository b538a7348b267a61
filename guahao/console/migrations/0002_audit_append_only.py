"""On PostgreSQL the database itself refuses to change or delete an audit row, whoever asks."""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION console_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'console_auditentry is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER console_auditentry_append_only
    BEFORE UPDATE OR DELETE ON console_auditentry
    FOR EACH ROW EXECUTE FUNCTION console_audit_append_only();
"""

DROP = """
DROP TRIGGER IF EXISTS console_auditentry_append_only ON console_auditentry;
DROP FUNCTION IF EXISTS console_audit_append_only();
"""


# params=None: the SQL is sent as it is, so the "%" of RAISE's format is not taken for a placeholder.
def create(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def drop(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("console", "0001_initial")]
    operations = [migrations.RunPython(create, drop)]
