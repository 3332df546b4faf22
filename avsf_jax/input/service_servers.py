r"""tf.data service servers for `input/service.py`: one dispatcher, workers on CPU hosts.

  python -m avsf_jax.input.service_servers dispatcher --port=5050 [--work_dir=gs://B/dispatcher]
  python -m avsf_jax.input.service_servers worker --dispatcher=HOST:5050 --port=5051 \
      [--host=THIS_HOST] [--count=1]

Workers run the serialized training graph, which holds TensorFlow ops only, so this module
imports nothing but TensorFlow and absl: a worker host needs `tensorflow-cpu` and read access to
the prepared data, not the rest of avsf_jax. `--count` starts that many workers in one process
(ports from `--port` upwards; 0 picks free ones), for a local service.
"""

from absl import app, flags

_PORT = flags.DEFINE_integer('port', 0, 'port of the (first) server; 0 picks a free one')
_DISPATCHER = flags.DEFINE_string('dispatcher', '', 'worker: the dispatcher, host:port')
_HOST = flags.DEFINE_string(
  'host', 'localhost', 'worker: the name under which consumers reach this host'
)
_COUNT = flags.DEFINE_integer('count', 1, 'worker: how many workers this process runs')
_WORK_DIR = flags.DEFINE_string(
  'work_dir', '', 'dispatcher: journal folder, so that a restarted dispatcher resumes its jobs'
)


def start_dispatcher(port: int = 0, work_dir: str = ''):
  import tensorflow as tf  # noqa: PLC0415 - only the servers need it

  config = tf.data.experimental.service.DispatcherConfig(
    port=port, work_dir=work_dir or None, fault_tolerant_mode=bool(work_dir)
  )
  return tf.data.experimental.service.DispatchServer(config)


def start_workers(dispatcher: str, *, port: int = 0, count: int = 1, host: str = 'localhost'):
  """`count` workers registered with `dispatcher` (host:port), reached by consumers at
  `host`; ports `port`, `port + 1`, ... (0: free ones)."""
  import tensorflow as tf  # noqa: PLC0415

  tf.config.set_visible_devices([], 'GPU')
  workers = []
  for i in range(count):
    worker_port = port + i if port else 0
    config = tf.data.experimental.service.WorkerConfig(
      dispatcher_address=dispatcher.removeprefix('grpc://'),
      worker_address=f'{host}:%port%',  # TF puts the bound port in place of %port%
      port=worker_port,
    )
    workers.append(tf.data.experimental.service.WorkerServer(config))
  return workers


def main(argv):
  if len(argv) != 2 or argv[1] not in ('dispatcher', 'worker'):
    raise app.UsageError('usage: service_servers {dispatcher,worker} [flags]')
  if argv[1] == 'dispatcher':
    server = start_dispatcher(_PORT.value, _WORK_DIR.value)
    print(f'dispatcher at {server.target}', flush=True)
    server.join()
  if not _DISPATCHER.value:
    raise app.UsageError('worker: --dispatcher=HOST:PORT is required')
  workers = start_workers(_DISPATCHER.value, port=_PORT.value, count=_COUNT.value, host=_HOST.value)
  print(f'{len(workers)} worker(s) registered with {_DISPATCHER.value}', flush=True)
  workers[0].join()


if __name__ == '__main__':
  app.run(main)
