"""The console of the command-line programs: one line per stage, progress bars, a summary.

A new user running `make demo` should see what happens, not how: the entry points call
`setup(log_path, verbose=...)` once their flags are parsed, and from then on

- library logs (orbax, TensorFlow, JAX/XLA, absl INFO, Python warnings) go to the log file
  (`WORKDIR/log.txt`), and to the console as well with `--verbose`;
- warnings and errors of avsf_jax itself, and errors of any library, still reach the console;
- `stage(name, text)` prints one aligned line per stage (dataset, compile, training, ...);
- `progress(...)` is a tqdm bar (step, loss, clips/s, ETA) on process 0 only;
- `summary(rows)` prints the closing table (results, plots, log, TensorBoard command).

`parse_flags` replaces absl's flag parser so that a config file's own error (an unknown
variant, say) is one line instead of a traceback.

Every command line (`python -m avsf_jax.main`, `.evaluate`, `.export`, `avsf_jax.tools.*`)
starts its main through `guard(program, main)`: an error of the user's input (`USER_ERRORS`:
a damaged or missing file, a file of another model, an unloadable config file) ends it with
one line `program: message` on stderr and exit status 1; with `--verbose` the traceback is
printed first. Any other exception (a bug) keeps its traceback.
"""

import functools
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence

from absl import flags
from absl import logging as absl_logging

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_STAGE_WIDTH = 11
_state = {'verbose': False, 'handler': None, 'log_path': None, 'terminal': None}


def define_flags() -> None:
  """Defines `--verbose` (once per process)."""
  if 'verbose' not in flags.FLAGS:
    flags.DEFINE_bool('verbose', False, 'Also show library logs (they always go to log.txt).')


def add_verbose_argument(parser) -> None:
  """`--verbose` for the programs that parse their arguments with argparse."""
  parser.add_argument(
    '--verbose', action='store_true', help='Show the traceback of a failure, and library logs.'
  )


def verbose_requested() -> bool:
  """Whether `--verbose` was given: the parsed absl flag where there is one, else argv."""
  if 'verbose' in flags.FLAGS and flags.FLAGS.is_parsed():
    return bool(flags.FLAGS.verbose)
  return any(
    a in ('--verbose', '--verbose=true', '--verbose=True', '--verbose=1') for a in sys.argv
  )


def quiet_native_logs() -> None:
  """Hides the C++ INFO/WARNING lines of TensorFlow and XLA (oneDNN notices and the like)
  unless --verbose is given or the user chose a level. Only effective before TensorFlow
  and jaxlib are imported: entry points call it first thing."""
  if '--verbose' not in sys.argv:
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def redirect_native_stderr(path: str) -> None:
  """Sends file descriptor 2, where C++ code logs (TensorFlow's oneDNN notice, XLA's
  slow-compilation alarm), to `path`; Python's `sys.stderr` (tracebacks, progress bars,
  the warnings that matter) keeps writing to the terminal through a copy of the old fd 2.
  TensorFlow 2.21 prints its notices whatever TF_CPP_MIN_LOG_LEVEL says, so this is the
  one way to keep them off the console. Done once per process."""
  if _state['terminal'] is not None:
    return
  sys.stderr.flush()
  terminal = os.dup(2)
  log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  os.dup2(log_fd, 2)
  os.close(log_fd)
  sys.stderr = os.fdopen(terminal, 'w', buffering=1)
  _state['terminal'] = sys.stderr


class _ConsoleFilter(logging.Filter):
  """What reaches the console without --verbose: our own warnings, anyone's errors."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.ERROR:
      return True
    return record.levelno >= logging.WARNING and record.pathname.startswith(_PACKAGE_DIR)


def setup(
  log_path: str | os.PathLike | None, *, verbose: bool = False, redirect_native: bool = True
) -> str | None:
  """Routes logging: everything to `log_path` (appended; local paths only, a remote workdir
  logs to a local temporary file instead), the console as described in the module doc.
  With `redirect_native` (and not `verbose`), C++ log lines go to the file too
  (`redirect_native_stderr`).

  Returns the path of the log file actually written.
  """
  _state['verbose'] = verbose
  root = logging.getLogger()
  absl_handler = absl_logging.get_absl_handler()
  if _state['handler'] is not None:
    root.removeHandler(_state['handler'])
  path = None
  if log_path is not None:
    path = str(log_path)
    if '://' in path:  # gs:// and the like: no appends there; keep a local copy
      import tempfile  # noqa: PLC0415

      path = os.path.join(tempfile.gettempdir(), 'avsf_jax', re.sub(r'\W+', '_', path))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    handler = logging.FileHandler(path, mode='a')
    handler.setFormatter(absl_logging.PythonFormatter())
    handler.setLevel(logging.DEBUG)
    root.addHandler(handler)
    _state['handler'] = handler
  _state['log_path'] = path
  absl_logging.set_verbosity(absl_logging.INFO)
  root.setLevel(logging.INFO)
  for name in ('jax', 'orbax', 'tensorflow', 'absl'):
    logging.getLogger(name).setLevel(logging.INFO)
  logging.captureWarnings(True)
  # absl's own handler writes to stderr; without --verbose it passes only what matters.
  for f in list(absl_handler.filters):
    if isinstance(f, _ConsoleFilter):
      absl_handler.removeFilter(f)
  if not verbose:
    absl_handler.addFilter(_ConsoleFilter())
  if absl_handler not in root.handlers:
    root.addHandler(absl_handler)
  # Loggers with their own stderr handler (TensorFlow's) go through the root logger only.
  tf_logger = logging.getLogger('tensorflow')
  for h in list(tf_logger.handlers):
    tf_logger.removeHandler(h)
  tf_logger.propagate = True
  if redirect_native and not verbose and path is not None:
    redirect_native_stderr(path)
  absl_handler.python_handler.stream = sys.stderr
  return path


def log_path() -> str | None:
  """The log file `setup` chose (None before setup, or when logging to the console only)."""
  return _state['log_path']


def is_lead() -> bool:
  """Only process 0 prints; every process logs."""
  import jax  # noqa: PLC0415

  return jax.process_index() == 0


def _write(line: str) -> None:
  try:
    from tqdm import tqdm  # noqa: PLC0415

    tqdm.write(line, file=sys.stdout)  # keeps an open bar intact
  except ImportError:  # pragma: no cover - tqdm is a dependency
    print(line)
  sys.stdout.flush()


def stage(name: str, text: str) -> None:
  """One console line for a stage (`dataset`, `compile`, `training`, ...), also logged."""
  logging.getLogger('avsf_jax.console').info('%s: %s', name, text)
  if is_lead():
    _write(f'{name:<{_STAGE_WIDTH}}{text}')


def begin(name: str, text: str) -> None:
  """The first half of a stage line whose end (`end`) comes when the stage is done."""
  logging.getLogger('avsf_jax.console').info('%s: %s...', name, text)
  if is_lead():
    sys.stdout.write(f'{name:<{_STAGE_WIDTH}}{text} ... ')
    sys.stdout.flush()


def end(text: str) -> None:
  """Completes the line `begin` started."""
  logging.getLogger('avsf_jax.console').info('... %s', text)
  if is_lead():
    sys.stdout.write(f'{text}\n')
    sys.stdout.flush()


def line(text: str) -> None:
  """A console line that belongs to no stage (a headline, a hint), also logged."""
  logging.getLogger('avsf_jax.console').info('%s', text)
  if is_lead():
    _write(text)


class _NullBar:
  """Stands in for a bar on processes other than 0."""

  def update(self, n: int = 1) -> None:
    del n

  def set_postfix_str(self, text: str, refresh: bool = False) -> None:
    del text, refresh

  def close(self) -> None:
    pass


def progress(total: int, *, desc: str, unit: str = 'step', initial: int = 0):
  """A live bar (tqdm) with ETA; updates at most twice a second on a terminal, every 30 s
  when the output is a file (so logs stay short)."""
  if not is_lead():
    return _NullBar()
  from tqdm import tqdm  # noqa: PLC0415

  interactive = sys.stderr.isatty()
  return tqdm(
    total=total,
    initial=initial,
    desc=f'{desc:<{_STAGE_WIDTH - 1}}',
    unit=unit,
    dynamic_ncols=True,
    mininterval=0.5 if interactive else 60.0,
    leave=True,
    bar_format='{desc} {n_fmt}/{total_fmt} {bar} {elapsed}<{remaining}{postfix}',
  )


def progress_wrap(total: int, *, desc: str, unit: str = 'batch'):
  """`wrap(iterable)` for `Experiment.evaluate(progress=...)`: the same bar over batches."""

  def wrap(batches: Iterable) -> Iterable:
    bar = progress(total, desc=desc, unit=unit)
    try:
      for batch in batches:
        yield batch
        bar.update(1)
    finally:
      bar.close()

  return wrap


def train_postfix(metrics: dict[str, float]) -> str:
  """The training bar's suffix: loss and clips/s."""
  parts = []
  if 'loss' in metrics:
    parts.append(f'loss {metrics["loss"]:.3f}')
  if 'clips_per_sec' in metrics:
    parts.append(f'{metrics["clips_per_sec"]:.0f} clips/s')
  return ', '.join(parts)


def summary(rows: Sequence[tuple[str, str]]) -> None:
  """The closing table: one `name  value` row each, framed by rules."""
  if not is_lead():
    return
  width = max(len(name) for name, _ in rows)
  rule = '-' * min(100, max(len(name) + len(value) + 2 for name, value in rows))
  _write(rule)
  for name, value in rows:
    _write(f'{name:<{width}}  {value}')
  _write(rule)


def fail(program: str, error: BaseException | str) -> SystemExit:
  """The one-line exit of a user mistake: `program: message` on stderr, status 1. The
  exception's traceback goes to the log file (when `setup` chose one), and to the console
  first with --verbose."""
  if isinstance(error, BaseException):
    if verbose_requested():
      traceback.print_exception(error, file=sys.stderr)
      sys.stderr.flush()
    handler = _state['handler']
    if handler is not None:  # the file only: the console's handlers never see it
      record = logging.LogRecord(
        'avsf_jax.console',
        logging.INFO,
        __file__,
        0,
        '%s failed',
        (program,),
        (type(error), error, error.__traceback__),
      )
      handler.handle(record)
      handler.flush()
  return SystemExit(f'{program}: {one_line(error)}')


def _user_errors() -> tuple[type[BaseException], ...]:
  """What a user's input can raise: OSError (missing, denied, a folder, an unloadable
  config file: ml_collections raises OSError on first use of a config that failed to
  load), storage.FileFault (and its ExportError, AvaFileError, ...); the converters',
  checkpoints' and config errors are matched by name (`_USER_ERROR_NAMES`)."""
  from avsf_jax import storage  # noqa: PLC0415 - light (etils)

  return (OSError, storage.FileFault)


# Errors of the library matched by class name (importing them here would load orbax, torch).
_USER_ERROR_NAMES = frozenset(
  {
    'CheckpointError',
    'NonFiniteCheckpointError',
    'ConversionError',
    'UnsafeCheckpointError',
    'ConfigError',
    'WorkdirMismatchError',
    'NonFiniteError',
    'MediaError',
  }
)


def _is_user_error(error: BaseException) -> bool:
  if isinstance(error, _user_errors()):
    return True
  return any(cls.__name__ in _USER_ERROR_NAMES for cls in type(error).__mro__)


def one_line(error: BaseException | str) -> str:
  """The message of `error` on one line. ml_collections' "Configuration is not available"
  (a config file that failed to load) becomes `FILE: the config file cannot be loaded
  (cause)`; other multi-line messages keep their lines joined by ' | '."""
  text = str(error).strip()
  if 'Failed loading config file' in text:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    path = next((x for x in lines if x.startswith('/') or x.endswith('.py')), '?')
    cause = lines[-1] if len(lines) > 1 else text
    return f'{path}: the config file cannot be loaded ({cause})'
  return ' | '.join(line.strip() for line in text.splitlines() if line.strip())


def guard(program: str, main: Callable, errors: tuple[type[BaseException], ...] = ()) -> Callable:
  """`main` for `app.run` (or called directly, argparse programs): an error of the user's
  input (`_is_user_error`, or one of `errors`) ends the program with `fail(program, one
  line)`, after its traceback with --verbose; every other exception propagates with its
  traceback."""

  @functools.wraps(main)
  def run(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except Exception as e:
      if not (_is_user_error(e) or isinstance(e, errors)):
        raise
      raise fail(program, e) from None

  return run


_EXCEPTION_LINE = re.compile(r'^\s*(?:[\w.]+\.)?(?:\w+Error|\w+Exception): (?P<message>.+)$')


def config_file_error(message: str) -> str | None:
  """The last exception line of ml_collections' "Error whilst parsing config file" (which
  embeds the config file's traceback), or None for any other flag error."""
  if 'Error whilst parsing config file' not in message:
    return None
  for text in reversed(message.splitlines()):
    match = _EXCEPTION_LINE.match(text)
    if match:
      return match['message'].strip()
  return None


def program_name(argv0: str) -> str:
  """`avsf_jax.main` for `python -m avsf_jax.main` (argv[0] is then the file's path)."""
  stem = os.path.splitext(os.path.basename(argv0))[0]
  if os.path.dirname(os.path.abspath(argv0)).startswith(_PACKAGE_DIR) and stem:
    relative = os.path.relpath(os.path.splitext(os.path.abspath(argv0))[0], _PACKAGE_DIR)
    return 'avsf_jax.' + relative.replace(os.sep, '.')
  return stem or 'avsf_jax'


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a config file's error as one line (no traceback)."""
  from absl import app  # noqa: PLC0415

  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    message = config_file_error(str(e))
    if message is None:
      return app.parse_flags_with_usage(argv)
    program = program_name(argv[0] if argv else '')
    if '--verbose' in argv:  # the whole message: the config file's traceback
      print(str(e), file=sys.stderr)
    print(f'{program}: {message}', file=sys.stderr)
    sys.exit(2)
