"""A small kopf operator, unmodified kopf: run by test_kopf.py against Logbook."""
import kopf

@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    settings.posting.level = 0
    settings.watching.server_timeout = 10

@kopf.on.create('stable.example.com', 'v1', 'crontabs')
def created(spec, name, namespace, logger, **kwargs):
    logger.info(f"created {name}")
    return {'seen': spec.get('cronSpec')}

@kopf.on.update('stable.example.com', 'v1', 'crontabs')
def updated(spec, name, status, patch, **kwargs):
    patch.status['lastImage'] = spec.get('image')

@kopf.on.delete('stable.example.com', 'v1', 'crontabs')
def deleted(name, **kwargs):
    print(f"DELETED-HANDLER {name}", flush=True)
