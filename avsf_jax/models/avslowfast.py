"""The SlowFast family as one Flax module: AVSlowFast, SlowFast, Slow-only, Fast-only, Audio-only.

Pathways are chosen by `pathways`; everything else (laterals, audio fusion, DropPathway, AVS
projections, non-local, head) is switched by explicit fields. Inputs are a mapping:

  'slow':  (N, T, H, W, 3)            T frames at stride tau
  'fast':  (N, alpha*T, H, W, 3)      alpha*T frames at stride tau/alpha
  'audio': (N, time, freq, 1)          log-mel, e.g. 128 x 80
  'audio_negative' (optional): (N, time, freq, 1), misaligned audio for the AVS loss; it
      runs through the Audio pathway (which never sees video) and feeds only the AVS
      projections.

`__call__` returns `(logits, aux)`; `logits` is an array, or a dict for several heads.
`aux` holds 'avs' ({junction: {'visual', 'audio'[, 'audio_negative']}} embeddings),
'pooled' (per-pathway pool5 features) and 'drop_pathway_keep' (1 = audio kept). Per-stage
features are sown into the 'intermediates' collection as '<pathway>_<stage>_out'.
"""

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from avsf_jax.models import fusion, heads, layers, nonlocal_block, resnet

PATHWAYS = ('slow', 'fast', 'audio')
JUNCTIONS = ('pool1', 'res2', 'res3', 'res4')
AVS_JUNCTIONS = (*JUNCTIONS, 'pool5')
STAGES = ('res2', 'res3', 'res4', 'res5')
AUDIO_BLOCKS = {'v1': 'factorized_concat', 'v2': 'factorized_sum'}
DROP_PATHWAY_MODES = ('per_group', 'global', 'per_example')
AVS_INPUTS = ('fusion', 'pooled')
DROP_PATHWAY_SCOPES = ('laterals', 'laterals_and_head')


class AVSlowFast(nn.Module):
  """Audiovisual SlowFast network and its single- and two-pathway baselines.

  Attributes:
    num_classes: classes of the single head, or {head name: classes} for several heads.
    pathways: subset of ('slow', 'fast', 'audio').
    depth: ResNet depth, 50 or 101.
    slow_width: Slow stem channels (64); stages are 4x, 8x, 16x, 32x of it.
    beta_inv: Slow/Fast channel ratio (8 -> the Fast stem has 8 channels).
    alpha: Fast/Slow frame-rate ratio.
    fusion_kernel: temporal kernel of the time-strided Fast->Slow conv (5 for 4x16, 7 for 8x8).
    fusion_channel_ratio: the lateral conv outputs this times the Fast channels.
    lateral: Fast->Slow lateral kind, one of `fusion.LATERALS`.
    lateral_junctions: where Fast->Slow laterals join, a subset of JUNCTIONS.
    slow_temporal_kernels / fast_temporal_kernels: temporal kernel of the stem and of the
      first conv of each block of res2..res5 (SlowFast Table 1).
    temporal_kernel_blocks: per stage res2..res5, how many leading blocks use that temporal
      kernel (later ones use 1); PySlowFast's NUM_BLOCK_TEMP_KERNEL, (3, 4, 6, 3).
    audio_width_ratio: beta_A, Audio channels relative to Slow (1/2 -> stem 32).
    audio_block: 'v1' (released code: parallel 3x1 / 1x3 on the block input, concatenated)
      or 'v2' (PyTorchVideo: 1x1 reduce, parallel 3x1 / 1x3 summed) for res2 and res3.
    audio_time_stride_in_a: put the audio blocks' time stride on their first 1x1 conv
      instead of the 3x3 (PyTorchVideo does; the paper's Table 1 strides the 3x3).
    audio_fusion: 'a_fs', 'a_f_s' or 'av_nonlocal'.
    audio_fusion_junctions: where audio joins the visual pathways, a subset of JUNCTIONS.
    audio_fusion_kernel: temporal kernel of the A->FS / A->F->S convs.
    audio_fusion_inner: intermediate width of A->FS / A->F->S and the inner width of the
      audiovisual non-local block (64 in the released configs); 0 means
      `audio_fusion_inner_ratio` x the audio width at the junction (PyTorchVideo: 0.25).
    audio_fusion_inner_ratio: see `audio_fusion_inner`.
    audio_pool5_concat: concatenate the pooled Audio features into the classifier input.
    drop_pathway_rate: probability P_d of dropping audio->visual contributions in a step.
    drop_pathway_mode: 'per_group' (one draw per BN group of `bn_group_size` clips, as the
      authors' code draws once per replica of 8 clips), 'global' (one draw for the whole
      global batch) or 'per_example'.
    drop_pathway_scope: 'laterals' (the released code: audio still reaches the classifier)
      or 'laterals_and_head' (the pooled audio features are zeroed too).
    avs_junctions: where AVS projection heads sit, a subset of AVS_JUNCTIONS.
    avs_inputs: what the AVS projections see. 'fusion' (the authors' code): at a fusion
      junction the visual side is the Slow tensor with the Fast->Slow lateral concatenated
      (before audio is added) and the audio side is the output of the A->FS fusion convs,
      pooled over time, so those convs get the AVS gradient; at pool5 a loss-only fusion
      block (`avs_pool5_fusion`) maps the res5 audio. 'pooled' (the first recipe): pooled
      Slow and Fast features against pooled Audio features.
    avs_dim: AVS embedding size.
    nonlocal_blocks: block indices of the Slow res4 stage followed by a non-local block.
    nonlocal_pool: max-pool window of the non-local keys/values.
    nonlocal_instantiation: 'dot_product' (PySlowFast's NL configs: affinity divided by the
      number of positions) or 'softmax' (embedded Gaussian).
    bn_group_size: clips per BN statistics group; 0 = the whole global batch.
    bn_momentum, bn_epsilon: BatchNorm running-average momentum (Flax convention), epsilon.
    dropout_rate: dropout before the classifier.
    head_pooling: 'global', or 'window' for the fully convolutional PySlowFast/PyTorchVideo
      test head that slides a `head_window` (res5 H, W) average pool at stride 1 and
      combines the positions' scores as `head_position_average` says.
    head_window: res5 spatial size of a training crop (224 / 32 = 7).
    res5_spatial_stride: spatial stride of the Slow and Fast res5 (2; 1 in the AVA detectors,
      whose res5 maps are then at 1/16 of the input, SlowFast paper section 5).
    res5_dilation: spatial dilation of the 1x3x3 conv of every Slow and Fast res5 block (1; 2
      in the AVA detectors), with padding = dilation. The Audio pathway is unchanged.
    head_position_average: how the window head combines its positions: 'softmax'
      (PySlowFast: softmax per position, then the mean; the logits returned are the log of
      that mean), 'sigmoid' (multi-label) or 'logits' (PyTorchVideo: mean of the logits).
    conv_lowering: how convolutions are computed, one of `convolution.LOWERINGS` ('auto':
      CPU-friendly lowerings on CPU, XLA's convolutions on GPU/TPU); same parameters either way.
    dtype: compute dtype (params, BN statistics, head and logits stay float32).
  """

  num_classes: int | Mapping[str, int]
  pathways: Sequence[str] = PATHWAYS
  depth: int = 50
  slow_width: int = 64
  beta_inv: int = 8
  alpha: int = 8
  fusion_kernel: int = 5
  fusion_channel_ratio: int = 2
  lateral: str = 'time_strided_conv'
  lateral_junctions: Sequence[str] = JUNCTIONS
  slow_temporal_kernels: Sequence[int] = (1, 1, 1, 3, 3)
  fast_temporal_kernels: Sequence[int] = (5, 3, 3, 3, 3)
  temporal_kernel_blocks: Sequence[int] = (3, 4, 6, 3)
  audio_width_ratio: float = 0.5
  audio_block: str = 'v1'
  audio_time_stride_in_a: bool = False
  audio_fusion: str = 'a_fs'
  audio_fusion_junctions: Sequence[str] = ('res3', 'res4')
  audio_fusion_kernel: int = 5
  audio_fusion_inner: int = 64
  audio_fusion_inner_ratio: float = 0.25
  audio_pool5_concat: bool = True
  drop_pathway_rate: float = 0.8
  drop_pathway_mode: str = 'global'
  drop_pathway_scope: str = 'laterals'
  avs_junctions: Sequence[str] = ('res3', 'res4', 'pool5')
  avs_dim: int = 64
  avs_inputs: str = 'fusion'
  nonlocal_blocks: Sequence[int] = ()
  nonlocal_pool: Sequence[int] = (1, 2, 2)
  nonlocal_instantiation: str = 'dot_product'
  bn_group_size: int = 8
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dropout_rate: float = 0.5
  head_pooling: str = 'global'
  head_window: Sequence[int] = (7, 7)
  head_position_average: str = 'softmax'
  res5_spatial_stride: int = 2
  res5_dilation: int = 1
  conv_lowering: str = 'auto'
  dtype: Any = jnp.float32

  def _validate(self) -> None:
    def check(ok: bool, message: str) -> None:
      if not ok:
        raise ValueError(f'AVSlowFast: {message}')

    check(
      bool(self.pathways) and set(self.pathways) <= set(PATHWAYS),
      f'pathways={tuple(self.pathways)}; choose from {PATHWAYS}',
    )
    check(
      set(self.lateral_junctions) <= set(JUNCTIONS), f'lateral_junctions must be in {JUNCTIONS}'
    )
    check(self.lateral in fusion.LATERALS, f'lateral={self.lateral!r}; one of {fusion.LATERALS}')
    check(
      set(self.audio_fusion_junctions) <= set(JUNCTIONS),
      f'audio_fusion_junctions must be in {JUNCTIONS}',
    )
    check(
      self.audio_fusion in fusion.AUDIO_FUSIONS,
      f'audio_fusion={self.audio_fusion!r}; one of {fusion.AUDIO_FUSIONS}',
    )
    check(self.audio_block in AUDIO_BLOCKS, f'audio_block={self.audio_block!r}; one of v1, v2')
    check(
      set(self.avs_junctions) <= set(AVS_JUNCTIONS), f'avs_junctions must be in {AVS_JUNCTIONS}'
    )
    check(
      self.drop_pathway_mode in DROP_PATHWAY_MODES,
      f'drop_pathway_mode={self.drop_pathway_mode!r}; one of {DROP_PATHWAY_MODES}',
    )
    check(
      self.drop_pathway_scope in DROP_PATHWAY_SCOPES,
      f'drop_pathway_scope={self.drop_pathway_scope!r}; one of {DROP_PATHWAY_SCOPES}',
    )
    check(self.avs_inputs in AVS_INPUTS, f'avs_inputs={self.avs_inputs!r}; one of {AVS_INPUTS}')
    check(0.0 <= self.drop_pathway_rate <= 1.0, 'drop_pathway_rate must be in [0, 1]')
    check(
      self.nonlocal_instantiation in nonlocal_block.INSTANTIATIONS,
      f'nonlocal_instantiation={self.nonlocal_instantiation!r}; one of '
      f'{nonlocal_block.INSTANTIATIONS}',
    )
    check(self.head_pooling in heads.POOLINGS, f'head_pooling one of {heads.POOLINGS}')
    check(
      self.head_position_average in heads.POSITION_AVERAGES,
      f'head_position_average={self.head_position_average!r}; one of {heads.POSITION_AVERAGES}',
    )
    check(
      len(self.slow_temporal_kernels) == 5 and len(self.fast_temporal_kernels) == 5,
      'temporal kernel tables need 5 entries (stem, res2..res5)',
    )
    check(len(self.temporal_kernel_blocks) == 4, 'temporal_kernel_blocks needs 4 entries')
    check(self.res5_spatial_stride in (1, 2), 'res5_spatial_stride must be 1 or 2')
    check(self.res5_dilation >= 1, 'res5_dilation must be >= 1')
    if 'audio' in self.pathways and len(self.pathways) > 1 and self.audio_fusion_junctions:
      needs = 'fast' if self.audio_fusion == 'a_f_s' else 'slow'
      check(needs in self.pathways, f'audio_fusion={self.audio_fusion!r} needs the {needs} pathway')

  def _width(self, pathway: str) -> int:
    if pathway == 'slow':
      return self.slow_width
    if pathway == 'fast':
      return self.slow_width // self.beta_inv
    return max(1, round(self.slow_width * self.audio_width_ratio))

  def _stem(self, pathway: str, x: jax.Array, conv, norm) -> jax.Array:
    width = self._width(pathway)
    if pathway == 'audio':
      x = conv(width, (9, 1), name='audio_stem_time')(x) + conv(
        width, (1, 9), name='audio_stem_freq'
      )(x)
      return nn.relu(norm(name='audio_stem_bn')(x))
    kernels = self.slow_temporal_kernels if pathway == 'slow' else self.fast_temporal_kernels
    x = conv(width, (kernels[0], 7, 7), (1, 2, 2), name=f'{pathway}_stem')(x)
    x = nn.relu(norm(name=f'{pathway}_stem_bn')(x))
    return layers.max_pool(x, (1, 3, 3), (1, 2, 2))

  def _stage(self, pathway: str, index: int, conv, norm) -> resnet.Stage:
    num_blocks, features, inner = resnet.stage_widths(self._width(pathway), self.depth)[index]
    name = f'{pathway}_{STAGES[index]}'
    if pathway == 'audio':
      stride = 1 if index == 0 else 2
      return resnet.Stage(
        num_blocks=num_blocks,
        features=features,
        inner=inner,
        kernel_a=(1, 1),
        kernel_b=(3, 3),
        stride=(stride, stride),
        conv=conv,
        norm=norm,
        transform=AUDIO_BLOCKS[self.audio_block] if index < 2 else 'standard',
        time_stride_in_a=self.audio_time_stride_in_a,
        name=name,
      )
    kernels = self.slow_temporal_kernels if pathway == 'slow' else self.fast_temporal_kernels
    stride = 1 if index == 0 else 2
    dilation = None
    if index == 3:
      stride = self.res5_spatial_stride
      if self.res5_dilation != 1:
        dilation = (1, self.res5_dilation, self.res5_dilation)
    nonlocal_after = self.nonlocal_blocks if (pathway == 'slow' and index == 2) else ()
    return resnet.Stage(
      num_blocks=num_blocks,
      features=features,
      inner=inner,
      kernel_a=(kernels[index + 1], 1, 1),
      kernel_b=(1, 3, 3),
      stride=(1, stride, stride),
      conv=conv,
      norm=norm,
      temporal_blocks=self.temporal_kernel_blocks[index],
      nonlocal_after=tuple(nonlocal_after),
      nonlocal_pool=tuple(self.nonlocal_pool),
      nonlocal_instantiation=self.nonlocal_instantiation,
      dilation=dilation,
      name=name,
    )

  def _drop_pathway_keep(self, batch: int, train: bool) -> jax.Array | None:
    """The DropPathway switch (see `drop_pathway_keep`), or None outside training."""
    audiovisual = 'audio' in self.pathways and len(self.pathways) > 1
    if not (train and audiovisual and self.drop_pathway_rate > 0.0):
      return None
    return drop_pathway_keep(
      self.make_rng('drop_pathway'),
      batch=batch,
      rate=self.drop_pathway_rate,
      mode=self.drop_pathway_mode,
      group_size=self.bn_group_size,
    )

  def _fusion_inner(self, audio: jax.Array) -> int:
    if self.audio_fusion_inner > 0:
      return self.audio_fusion_inner
    return max(1, int(audio.shape[-1] * self.audio_fusion_inner_ratio))

  @nn.compact
  def __call__(
    self, inputs: Mapping[str, jax.Array], *, train: bool
  ) -> tuple[jax.Array | dict[str, jax.Array], dict[str, Any]]:
    x, pooled, avs, keep = self.trunk(inputs, train=train)
    batch = x[self.pathways[0]].shape[0]
    head_inputs = [p for p in self.pathways if p != 'audio' or self.audio_pool5_concat]
    if self.head_pooling == 'window' and not train:
      windows = [heads.window_pool(x[p], self.head_window) for p in head_inputs if p != 'audio']
      positions = max(w.shape[1] for w in windows) if windows else 1
      features = [jnp.broadcast_to(w, (batch, positions, w.shape[-1])) for w in windows]
      if 'audio' in head_inputs:
        a = pooled['audio'][:, None, :]
        features.append(jnp.broadcast_to(a, (batch, positions, a.shape[-1])))
    else:
      features = [pooled[p] for p in head_inputs]
    logits = heads.ClassifierHead(
      self.num_classes, self.dropout_rate, self.head_position_average, name='head'
    )(jnp.concatenate(features, axis=-1), train=train)
    keep_out = jnp.ones((), jnp.float32) if keep is None else keep.astype(jnp.float32)
    return logits, {'avs': avs, 'pooled': pooled, 'drop_pathway_keep': keep_out}

  def trunk(
    self, inputs: Mapping[str, jax.Array], *, train: bool
  ) -> tuple[dict[str, jax.Array], dict[str, jax.Array], dict[str, Any], jax.Array | None]:
    """Everything but the classifier: (res5 maps {pathway: array}, pooled pool5 features,
    AVS embeddings, DropPathway keep or None). Called from a compact `__call__` (this one or
    a subclass's, e.g. `detector.Detector`), so its submodules keep their top-level names."""
    self._validate()
    conv = functools.partial(layers.Conv, lowering=self.conv_lowering, dtype=self.dtype)
    norm = functools.partial(
      layers.BatchNorm,
      use_running_average=not train,
      group_size=self.bn_group_size,
      momentum=self.bn_momentum,
      epsilon=self.bn_epsilon,
      dtype=self.dtype,
    )
    missing = [p for p in self.pathways if p not in inputs]
    if missing:
      raise KeyError(f'AVSlowFast: inputs lack {missing}; got keys {sorted(inputs)}')
    x = {p: jnp.asarray(inputs[p], self.dtype) for p in self.pathways}
    batch = x[self.pathways[0]].shape[0]
    has_audio = 'audio' in self.pathways
    audiovisual = has_audio and len(self.pathways) > 1
    has_negative = audiovisual and bool(self.avs_junctions)
    has_negative = has_negative and inputs.get('audio_negative') is not None
    if has_negative:
      negative = jnp.asarray(inputs['audio_negative'], self.dtype)
      if negative.shape != x['audio'].shape:
        raise ValueError(
          f'AVSlowFast: audio_negative {negative.shape} must match audio {x["audio"].shape}'
        )
      x['audio'] = _join_blocks(x['audio'], negative, self.bn_group_size)

    def positives(a: jax.Array) -> jax.Array:
      return _split_blocks(a, self.bn_group_size)[0] if has_negative else a

    keep = self._drop_pathway_keep(batch, train)

    def gate(y: jax.Array) -> jax.Array:
      if keep is None:
        return y
      k = keep.astype(y.dtype)
      return y * k.reshape(k.shape + (1,) * (y.ndim - k.ndim))

    def pooled_visual() -> jax.Array:
      return jnp.concatenate(
        [heads.global_pool(x[p]) for p in ('slow', 'fast') if p in self.pathways], axis=-1
      )

    def add_avs(junction: str, visual: jax.Array, audio: jax.Array) -> None:
      if junction not in self.avs_junctions or not audiovisual:
        return
      project_v = fusion.AVSProjection(self.avs_dim, name=f'avs_{junction}_visual')
      project_a = fusion.AVSProjection(self.avs_dim, name=f'avs_{junction}_audio')
      entry = {'visual': project_v(visual), 'audio': project_a(positives(audio))}
      if has_negative:
        entry['audio_negative'] = project_a(_split_blocks(audio, self.bn_group_size)[1])
      avs[junction] = entry

    avs: dict[str, dict[str, jax.Array]] = {}
    for p in self.pathways:
      x[p] = self._stem(p, x[p], conv, norm)
    for index, junction in enumerate((*JUNCTIONS, 'res5')):
      if junction != 'pool1':
        for p in self.pathways:
          x[p] = self._stage(p, index - 1, conv, norm)(x[p])
          self.sow('intermediates', f'{p}_{junction}_out', x[p])
      if junction == 'res5':
        break
      audio_here = has_audio and junction in self.audio_fusion_junctions
      if audio_here and self.audio_fusion == 'a_f_s' and 'fast' in self.pathways:
        contribution = fusion.AudioToVisual(
          features=x['fast'].shape[-1],
          inner=self._fusion_inner(x['audio']),
          kernel=self.audio_fusion_kernel,
          num_frames=x['fast'].shape[1],
          conv=conv,
          norm=norm,
          name=f'audio_to_fast_{junction}',
        )(positives(x['audio']))
        x['fast'] = x['fast'] + gate(contribution[:, :, None, None, :])
      if 'slow' in self.pathways and 'fast' in self.pathways:
        if junction in self.lateral_junctions:
          x['slow'] = fusion.FastToSlow(
            kind=self.lateral,
            alpha=self.alpha,
            kernel=self.fusion_kernel,
            channel_ratio=self.fusion_channel_ratio,
            conv=conv,
            norm=norm,
            name=f'fast_to_slow_{junction}',
          )(x['slow'], x['fast'])
      avs_here = audiovisual and junction in self.avs_junctions
      avs_from_fusion = (
        avs_here
        and self.avs_inputs == 'fusion'
        and 'slow' in self.pathways
        and audio_here
        and self.audio_fusion == 'a_fs'
      )
      # The visual side is taken before audio is added at this junction.
      visual = None
      if avs_here:
        visual = heads.global_pool(x['slow']) if avs_from_fusion else pooled_visual()
      avs_audio = None
      if audio_here and 'slow' in self.pathways and self.audio_fusion != 'a_f_s':
        if self.audio_fusion == 'a_fs':
          # With 'fusion' AVS inputs the convs also map the negatives (joined to the
          # positives in BN-group blocks), and their output, ungated, is the AVS audio side.
          fused = fusion.AudioToVisual(
            features=x['slow'].shape[-1],
            inner=self._fusion_inner(x['audio']),
            kernel=self.audio_fusion_kernel,
            num_frames=x['slow'].shape[1],
            conv=conv,
            norm=norm,
            name=f'audio_to_slowfast_{junction}',
          )(x['audio'] if avs_from_fusion else positives(x['audio']))
          if avs_from_fusion:
            avs_audio = heads.global_pool(fused)
            fused = positives(fused)
          contribution = fused[:, :, None, None, :]
        else:
          contribution = fusion.AudioVisualNonLocal(
            inner=self._fusion_inner(x['audio']),
            conv=conv,
            norm=norm,
            name=f'audio_visual_nonlocal_{junction}',
          )(x['slow'], positives(x['audio']))
        x['slow'] = x['slow'] + gate(contribution)
      if visual is not None:
        add_avs(junction, visual, heads.global_pool(x['audio']) if avs_audio is None else avs_audio)

    pooled = {p: heads.global_pool(x[p]) for p in self.pathways}
    if has_audio:
      if audiovisual and 'pool5' in self.avs_junctions:
        visual = pooled_visual()
        avs_audio = pooled['audio']
        if self.avs_inputs == 'fusion':
          # A fusion block used only by the loss: the res5 audio mapped, like A->FS, to the
          # width of the pooled visual features and the visual frame count, then pooled.
          visual_frames = x['slow' if 'slow' in self.pathways else 'fast'].shape[1]
          avs_audio = heads.global_pool(
            fusion.AudioToVisual(
              features=visual.shape[-1],
              inner=self._fusion_inner(x['audio']),
              kernel=self.audio_fusion_kernel,
              num_frames=visual_frames,
              conv=conv,
              norm=norm,
              name='avs_pool5_fusion',
            )(x['audio'])
          )
        add_avs('pool5', visual, avs_audio)
      pooled['audio'] = positives(pooled['audio'])
      if self.drop_pathway_scope == 'laterals_and_head':
        pooled['audio'] = gate(pooled['audio'])

    return x, pooled, avs, keep


def drop_pathway_keep(
  rng: jax.Array, *, batch: int, rate: float, mode: str, group_size: int
) -> jax.Array:
  """DropPathway decisions (True = keep the audio->visual laterals) for one training step.

  `rng` is the step's 'drop_pathway' key (the training step folds it with the step), so
  every device of a jitted step computes the same decisions:
    - 'global': one draw for the whole global batch, a bool scalar;
    - 'per_example': one draw per clip, (batch,);
    - 'per_group': one draw per BN group of `group_size` clips (0 = the whole batch),
      repeated over the group's clips, (batch,). Group g's draw uses `rng` folded with g, so
      it depends on the step and the group's place in the global batch, not on sharding.
      The authors' code draws once per forward pass of a replica, i.e. per 8-clip BN group.
  """
  p_keep = 1.0 - rate
  if mode == 'global':
    return jax.random.bernoulli(rng, p_keep, ())
  if mode == 'per_example':
    return jax.random.bernoulli(rng, p_keep, (batch,))
  if mode != 'per_group':
    raise ValueError(f'drop_pathway_mode={mode!r}; one of {DROP_PATHWAY_MODES}')
  group = group_size or batch
  if batch % group:
    raise ValueError(
      f'AVSlowFast: drop_pathway_mode=per_group needs the batch ({batch}) to be a multiple of '
      f'bn_group_size ({group})'
    )
  draws = jax.vmap(lambda g: jax.random.bernoulli(jax.random.fold_in(rng, g), p_keep, ()))(
    jnp.arange(batch // group)
  )
  return jnp.repeat(draws, group)


def _blocks(batch: int, group: int) -> int:
  """Block size for joining positive and negative audio: the BN group when it divides the
  batch (so groups stay pure), else single clips (whole-batch BN mixes them anyway)."""
  return group if 0 < group <= batch and batch % group == 0 else 1


def _join_blocks(positive: jax.Array, negative: jax.Array, group: int) -> jax.Array:
  """(N, ...) + (N, ...) -> (2N, ...) alternating blocks of clips: pos, neg, pos, neg, ...

  Plain concatenation along a sharded batch axis would make XLA move half of every device's
  clips to other devices (an all-to-all). Alternating BN-group-sized blocks keeps each
  clip's negative on its device whenever the per-device batch is a multiple of the BN group
  (which grouped BN needs anyway), and keeps every BN group purely positive or negative.
  """
  n, rest = positive.shape[0], positive.shape[1:]
  g = _blocks(n, group)
  joined = jnp.stack(
    [positive.reshape((n // g, g) + rest), negative.reshape((n // g, g) + rest)], axis=1
  )
  return joined.reshape((2 * n,) + rest)


def _split_blocks(joined: jax.Array, group: int) -> tuple[jax.Array, jax.Array]:
  """Inverse of `_join_blocks`: (positive, negative)."""
  n, rest = joined.shape[0] // 2, joined.shape[1:]
  g = _blocks(n, group)
  blocks = joined.reshape((n // g, 2, g) + rest)
  return blocks[:, 0].reshape((n,) + rest), blocks[:, 1].reshape((n,) + rest)
