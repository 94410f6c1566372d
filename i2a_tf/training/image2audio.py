"""The Image2Audio model: E, G, D and C trained by one custom `train_step`.

`train_step` is written for one replica's batch and never assumes `fit`:
`model.fit` runs it under the default or a mirrored strategy, and a custom loop
can call `strategy.run(model.train_step, (batch,))` (the design that serves
multi-worker training, where Keras 3 `fit` fails: keras-team/keras#20585).
Every loss divides by a *global* denominator (see `training.losses`), so the
summed replica gradients equal the single-device gradient of the global batch.

One forward pass per step serves all three objectives (simultaneous updates):
G translates the face batch once; D scores real and translated spectrograms in
one call; C embeds and classifies labeled, unlabeled and translated
spectrograms in one call. Three optimizers then apply the gradients of

  L_D = adversarial loss of D (+ optional R1)                    -> D
  L_G = adversarial loss of G + λ_cls · CE(C(s̃), y)              -> E, G
  L_C = CE(C(x_a), y) + r(t) · [ λ_t · Σ w j CE(C(s̃), y) / M
                                 + λ_u · Σ c CE(C(x_u), ŷ) / B_u
                                 + λ_c · Σ 1[max p ≥ τ_c] CE(C(A(x_u)), argmax p) / B_u ]
                                                                  -> C

r(t) ramps the auxiliary terms in after warm-up (`losses.rampup_weight`), j is
the frozen judge's verdict on a translation (`--use_translation_judge`), and the
consistency term (`--use_consistency`, FixMatch) takes p = C(weak view) as the
target of a strongly augmented view A(x_u). The translated and pseudo-labeled
terms divide by the number of samples in the batch (M, B_u) by default;
`--translated_normalizer=weight_sum` / `--unlabeled_normalizer=weight_sum`
restore DESIGN.md's weighted means (Σ w, Σ c), under which a lone translated
sample of weight 1e-5 weighs as much as the labeled batch
(docs/results/ANALYSIS.md).

State the callbacks refresh lives in non-trainable variables, so the compiled
step never retraces and `BackupAndRestore` checkpoints it with the weights:
the epoch, the per-class φ banks of labeled clips with their bandwidths and
leave-one-out densities, and the pseudo-labels and confidences of the unlabeled
clips (indexed by the clip's `index` in the unlabeled pool, `pipeline.unlabeled_pool`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from i2a_tf import density
from i2a_tf.config import Config, bandwidth_setting
from i2a_tf.models import (EMBEDDING_LAYER, build_classifier, build_discriminator,
                           build_face_encoder, build_generator)
from i2a_tf.training import losses

def tracked_terms(config: Config, has_unlabeled: bool) -> tuple[str, ...]:
    """Names of the `Mean` trackers a run logs: only the terms its switches
    compute, so a switched-off term is absent from the logs rather than a
    misleading 0."""
    names = ["loss", "c_loss", "c_labeled_loss", "labeled_accuracy"]
    if config.loss.use_translation or (has_unlabeled and (
            config.graph.use_pseudo_labels or config.loss.use_consistency)):
        names.append("aux_weight")
    if config.graph.use_pseudo_labels and has_unlabeled:
        names += ["c_unlabeled_loss", "pseudo_labeled_fraction"]
    if config.loss.use_consistency and has_unlabeled:
        names += ["c_consistency_loss", "consistency_mask_fraction",
                  "consistency_target_accuracy"]
    if config.loss.use_translation:
        names += ["d_loss", "g_adversarial_loss", "g_class_loss", "c_translated_loss",
                  "translated_accuracy", "mean_density_weight", "admitted_fraction"]
        if config.loss.r1_gamma > 0:
            names.append("r1_penalty")
        if config.loss.lambda_diversity > 0:
            names.append("g_diversity_loss")
        if config.loss.lambda_density > 0:
            names.append("g_density_loss")
        if config.loss.use_density_weights:
            # The density gate's two parts: which one rejects the translations.
            names += ["annealing_threshold", "reliable_fraction", "dense_fraction"]
        if config.loss.use_translation_judge:
            names += ["judge_accuracy", "judge_admitted_fraction"]
    return tuple(names)


def _global_sum(value: tf.Tensor) -> tf.Tensor:
    """Σ over replicas (identity on one replica)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def _global_mean(values: tf.Tensor, global_count) -> tf.Tensor:
    """Σ of a replica's `values` over replicas / `global_count` (the global
    batch): a share or mean over the whole batch."""
    return _global_sum(tf.reduce_sum(values)) / tf.cast(global_count, tf.float32)


def _denominator(normalizer: str, weights: tf.Tensor, global_count) -> tf.Tensor:
    """A weighted term's denominator: the global Σ weights ('weight_sum') or
    the global number of samples ('batch')."""
    if normalizer == "weight_sum":
        return _global_sum(tf.reduce_sum(weights))
    return tf.cast(global_count, tf.float32)


def _num_replicas() -> int:
    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def _replica_id():
    context = tf.distribute.get_replica_context()
    return 0 if context is None else context.replica_id_in_sync_group


class Image2Audio(keras.Model):
    """E, G, D, C and the training state; `call` is the classifier C.

    Args:
      config: the run's `Config` (model sizes, loss settings, schedule).
      num_classes: C.
      face_size: face image side.
      num_unlabeled: clips in the unlabeled pool (pseudo-label slots).
      bank_size: rows per class bank (>= the labeled clips of any class).
    """

    def __init__(self, config: Config, *, num_classes: int, face_size: int,
                 num_unlabeled: int, bank_size: int, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.num_classes = num_classes
        m, f = config.model, config.frontend
        def classifier_like(name):
            return build_classifier(
                num_classes, f.num_mels, f.num_frames, width=m.classifier_width,
                embedding_dim=m.embedding_dim, dropout=m.dropout,
                statistics=m.classifier_statistics, name=name)

        self.classifier = classifier_like("classifier")
        # φ and C in one forward pass (shared layers).
        self.classifier_outputs = keras.Model(
            self.classifier.input,
            [self.classifier.get_layer(EMBEDDING_LAYER).output, self.classifier.output],
            name="classifier_outputs")
        self.use_translation = config.loss.use_translation
        self.uses_teacher = (config.loss.use_consistency
                             and config.loss.consistency_teacher == "ema")
        if self.uses_teacher:
            # The mean teacher: C's architecture, its weights an EMA of C's
            # (`_update_teacher`), starting from C's initial weights.
            self.teacher = classifier_like("teacher")
            self.teacher.set_weights(self.classifier.get_weights())
            self.teacher.trainable = False
        if self.use_translation:
            self.face_encoder = build_face_encoder(
                face_size, m.encoder_width, m.face_code_dim)
            self.generator = build_generator(
                num_classes, f.num_mels, f.num_frames, code_dim=m.face_code_dim,
                class_embedding_dim=m.class_embedding_dim, noise_dim=m.noise_dim,
                width=m.generator_width)
            self.discriminator = build_discriminator(
                num_classes, f.num_mels, f.num_frames, width=m.discriminator_width)
            if config.loss.use_translation_judge:
                # The judge: C's architecture, its weights a snapshot of C at the
                # end of warm-up (`take_judge_snapshot`); no optimizer holds them.
                self.judge = classifier_like("judge")
                self.judge.trainable = False
        self.bank_size = max(int(bank_size), 1)
        self.num_unlabeled = max(int(num_unlabeled), 1)
        state = dict(trainable=False, autocast=False)
        self.epoch = self.add_weight(shape=(), initializer="zeros", name="epoch",
                                     **state)
        train = config.train
        self.adaptive_warmup = train.warmup_labeled_accuracy > 0
        if self.adaptive_warmup:
            # The epoch the full objective starts at: --warmup_epochs, pushed
            # back an epoch at a time by `AdaptiveWarmup` while C's labeled
            # accuracy is below --warmup_labeled_accuracy. A weight, so a
            # resumed run keeps it (and workers' fingerprints compare it).
            self.warmup_end = self.add_weight(
                shape=(), initializer=keras.initializers.Constant(float(train.warmup_epochs)),
                name="warmup_end", **state)
        self.class_banks = self.add_weight(
            shape=(num_classes, self.bank_size, m.embedding_dim), initializer="zeros",
            name="class_banks", **state)
        self.class_bank_mask = self.add_weight(
            shape=(num_classes, self.bank_size), initializer="zeros",
            name="class_bank_mask", **state)
        self.bandwidths = self.add_weight(
            shape=(num_classes,), initializer="ones", name="bandwidths", **state)
        self.bank_log_densities = self.add_weight(
            shape=(num_classes, self.bank_size), initializer="zeros",
            name="bank_log_densities", **state)
        # π_c of the KDE reliability: the labeled clips' class frequencies.
        self.class_priors = self.add_weight(
            shape=(num_classes,), initializer="ones", name="class_priors", **state)
        self.pseudo_labels = self.add_weight(
            shape=(self.num_unlabeled,), initializer=keras.initializers.Constant(-1),
            dtype="int32", name="pseudo_labels", **state)
        self.pseudo_confidences = self.add_weight(
            shape=(self.num_unlabeled,), initializer="zeros",
            name="pseudo_confidences", **state)
        # Running mean of C's weak-view probabilities on unlabeled clips
        # (distribution alignment of the consistency targets).
        self.unlabeled_prediction_mean = self.add_weight(
            shape=(num_classes,), initializer=keras.initializers.Constant(1 / num_classes),
            name="unlabeled_prediction_mean", **state)
        self.trackers = {name: keras.metrics.Mean(name=name)
                         for name in tracked_terms(config, num_unlabeled > 0)}
        # Every network is functional and already built; so is the state.
        self.built = True

    # -- Keras plumbing ---------------------------------------------------------

    def call(self, logmel, training=False):
        return self.classifier(logmel, training=training)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def compile(self, classifier_optimizer, generator_optimizer=None,
                discriminator_optimizer=None, **kwargs):
        """Takes the three optimizers (C; E+G; D) and builds them in scope.

        Each optimizer is built on its own variables here, inside the
        strategy scope: a multi-optimizer `train_step` under MirroredStrategy
        otherwise fails on a placeholder created at first apply.
        """
        # optimizer=None: Keras would otherwise build its default RMSprop over
        # every variable of C, E, G and D, and checkpoint it, unused.
        super().compile(optimizer=None, **kwargs)
        self.classifier_optimizer = classifier_optimizer
        self.classifier_optimizer.build(self.classifier.trainable_variables)
        if self.use_translation:
            if generator_optimizer is None or discriminator_optimizer is None:
                raise ValueError("use_translation needs generator and "
                                 "discriminator optimizers")
            self.generator_optimizer = generator_optimizer
            self.generator_optimizer.build(self.generator_variables)
            self.discriminator_optimizer = discriminator_optimizer
            self.discriminator_optimizer.build(self.discriminator.trainable_variables)

    @property
    def generator_variables(self):
        return (self.face_encoder.trainable_variables
                + self.generator.trainable_variables)

    # -- The schedule -------------------------------------------------------------

    def warmup_epochs(self) -> tf.Tensor:
        """The epoch the full objective starts at, as a float32 scalar."""
        if self.adaptive_warmup:
            return tf.convert_to_tensor(self.warmup_end)
        return tf.constant(float(self.config.train.warmup_epochs), tf.float32)

    def warmup_end_epoch(self) -> int:
        """`warmup_epochs()` as a Python int (for the callbacks)."""
        if self.adaptive_warmup:
            return int(round(float(self.warmup_end.numpy())))
        return self.config.train.warmup_epochs

    def latest_warmup_end(self) -> int:
        """The latest epoch an adaptive warm-up may end at."""
        train = self.config.train
        return train.warmup_max_epochs or max(
            train.epochs - max(self.config.loss.aux_rampup_epochs, 1), train.warmup_epochs)

    def full_objective_gate(self) -> tf.Tensor:
        """1.0 once warm-up is over, else 0.0."""
        return tf.cast(self.epoch >= self.warmup_epochs(), tf.float32)

    def aux_weight(self) -> tf.Tensor:
        """r(t): 0 in warm-up, then ramping to 1 over `aux_rampup_epochs`."""
        return losses.rampup_weight(self.epoch - self.warmup_epochs(),
                                    self.config.loss.aux_rampup_epochs)

    def take_judge_snapshot(self) -> None:
        """Copies C's current weights into the judge (called once, when the
        full objective starts, with the weights training would save)."""
        self.judge.set_weights(self.classifier.get_weights())

    def threshold(self) -> tf.Tensor:
        """τ(t) for the current epoch (τ_min when annealing is off)."""
        loss = self.config.loss
        if not loss.use_annealing:
            return tf.constant(loss.tau_min, tf.float32)
        train = self.config.train
        warmup = self.warmup_epochs()
        span = (tf.constant(float(loss.annealing_epochs)) if loss.annealing_epochs
                else tf.maximum(float(train.epochs) - warmup - 1.0, 1.0))
        progress = tf.maximum(self.epoch - warmup, 0.0)
        return density.annealing_threshold(progress, span, loss.tau_min,
                                           loss.annealing_schedule)

    # -- The step ---------------------------------------------------------------------

    def _global_step_seed(self) -> tf.Tensor:
        """A stateless seed `[2]` of the training seed (--train_seed, else
        --seed) and the step count (the same on every replica)."""
        return tf.stack([tf.constant(self.config.training_seed, tf.int64),
                         tf.cast(self.classifier_optimizer.iterations, tf.int64)])

    def _noise(self, batch_size: tf.Tensor) -> tf.Tensor:
        """z for this replica's faces: rows of one global draw keyed by the step,
        so the global batch gets the same noise on any number of replicas."""
        dim = self.config.model.noise_dim
        replicas = _num_replicas()
        replica = _replica_id()
        noise = tf.random.stateless_normal([batch_size * replicas, dim],
                                           self._global_step_seed())
        start = tf.cast(replica, tf.int32) * batch_size
        return noise[start:start + batch_size]

    def _step_seed(self, stream: int) -> tf.Tensor:
        """A stateless seed `[2]` for this step, replica and random `stream`:
        a function of the training seed, the step count and the replica only."""
        seed = tf.random.experimental.stateless_fold_in(
            self._global_step_seed(), tf.cast(_replica_id(), tf.int64))
        return tf.random.experimental.stateless_fold_in(seed, stream)

    def train_step(self, data):
        cfg = self.config.loss
        replicas = _num_replicas()
        gate = self.full_objective_gate()
        aux = self.aux_weight()
        labeled = data["labeled_logmel"]
        labeled_labels = tf.cast(data["labeled_labels"], tf.int32)
        batches = [labeled]
        if cfg.mixup_alpha > 0:
            # C sees mixed labeled clips; D keeps judging the real ones.
            mixed, partner_labels, mix = losses.mixup(
                labeled, labeled_labels, cfg.mixup_alpha, self._step_seed(stream=1))
            batches = [mixed]
        num_labeled = tf.shape(labeled)[0]
        global_labeled = num_labeled * replicas
        has_unlabeled = "unlabeled_logmel" in data
        # Unlabeled clips feed C only with pseudo-labels, and D as real clips.
        classify_unlabeled = has_unlabeled and self.config.graph.use_pseudo_labels
        if has_unlabeled:
            unlabeled = data["unlabeled_logmel"]
            index = tf.cast(data["unlabeled_index"], tf.int32)
            pseudo = tf.gather(self.pseudo_labels, index)
            confidence = tf.gather(self.pseudo_confidences, index)
            if not classify_unlabeled:
                confidence = tf.zeros_like(confidence)
            confidence = tf.where(pseudo >= 0, confidence, 0.0)
            num_unlabeled = tf.shape(unlabeled)[0]
        if classify_unlabeled:
            batches.append(unlabeled)
        consistency = has_unlabeled and cfg.use_consistency
        if consistency:
            # Targets from the weak view in inference mode (no dropout), no gradient.
            predictor = self.teacher if self.uses_teacher else self.classifier
            weak_logits = tf.stop_gradient(
                predictor(data["unlabeled_weak_logmel"], training=False))
            running_mean = None
            if cfg.consistency_alignment:
                batch_mean = _global_sum(tf.reduce_sum(
                    tf.nn.softmax(tf.cast(weak_logits, tf.float32)), axis=0)) / tf.cast(
                        tf.shape(weak_logits)[0] * replicas, tf.float32)
                self.unlabeled_prediction_mean.assign(
                    0.99 * self.unlabeled_prediction_mean + 0.01 * batch_mean)
                running_mean = tf.identity(self.unlabeled_prediction_mean)
            batches.append(data["unlabeled_strong_logmel"])
        logs = {"aux_weight": aux} if "aux_weight" in self.trackers else {}

        with tf.GradientTape(persistent=True) as tape:
            if self.use_translation:
                faces = data["face_images"]
                face_labels = tf.cast(data["face_labels"], tf.int32)
                num_faces = tf.shape(faces)[0]
                global_faces = num_faces * replicas
                face_codes = self.face_encoder(faces, training=True)
                generator_inputs = [face_codes, face_labels]
                if self.config.model.noise_dim:
                    generator_inputs.append(self._noise(num_faces))
                # float32 whatever the compute policy: it joins the real clips.
                translated = tf.cast(self.generator(generator_inputs, training=True),
                                     tf.float32)
                batches.append(translated)
            spectrograms = tf.concat(batches, axis=0)
            embeddings, logits = self.classifier_outputs(spectrograms, training=True)
            labeled_logits = logits[:num_labeled]
            if cfg.mixup_alpha > 0:
                c_labeled = losses.mixed_cross_entropy(
                    labeled_labels, partner_labels, mix, labeled_logits,
                    global_labeled, cfg.label_smoothing)
            else:
                c_labeled = losses.cross_entropy(labeled_labels, labeled_logits,
                                                 global_labeled, cfg.label_smoothing)
            c_loss = c_labeled
            if classify_unlabeled:
                unlabeled_logits = logits[num_labeled:num_labeled + num_unlabeled]
                c_unlabeled = losses.confidence_weighted_cross_entropy(
                    pseudo, unlabeled_logits, confidence, _denominator(
                        cfg.unlabeled_normalizer, confidence, num_unlabeled * replicas))
                c_loss += cfg.lambda_u * aux * c_unlabeled
                logs["c_unlabeled_loss"] = c_unlabeled
                logs["pseudo_labeled_fraction"] = _global_mean(
                    tf.cast(confidence > 0, tf.float32), num_unlabeled * replicas)
            if consistency:
                start = num_labeled + (num_unlabeled if classify_unlabeled else 0)
                strong_logits = logits[start:start + num_unlabeled]
                c_consistency, mask, targets = losses.consistency_cross_entropy(
                    weak_logits, strong_logits, cfg.consistency_threshold,
                    num_unlabeled * replicas, running_mean)
                c_loss += cfg.lambda_c * aux * c_consistency
                masked = _global_sum(tf.reduce_sum(mask))
                hits = _global_sum(tf.reduce_sum(mask * tf.cast(
                    tf.equal(targets, tf.cast(data["unlabeled_true_label"], tf.int32)),
                    tf.float32))) if "unlabeled_true_label" in data else 0.0
                logs.update(c_consistency_loss=c_consistency,
                            consistency_mask_fraction=masked
                            / tf.cast(num_unlabeled * replicas, tf.float32),
                            consistency_target_accuracy=tf.math.divide_no_nan(
                                hits, masked))
            if self.use_translation:
                translated_logits = logits[-num_faces:]
                weights, admitted, gates = self._translation_weights(
                    tf.stop_gradient(embeddings[-num_faces:]), face_labels)
                logs.update({name: _global_mean(passed, global_faces)
                             for name, passed in gates.items()})
                if cfg.use_translation_judge:
                    judge_probabilities = tf.nn.softmax(tf.cast(self.judge(
                        tf.stop_gradient(translated), training=False), tf.float32))
                    intended = tf.gather(judge_probabilities, face_labels, batch_dims=1)
                    verdict = tf.cast(intended >= cfg.judge_threshold, tf.float32)
                    weights = weights * verdict
                    admitted = admitted * verdict
                    logs.update(
                        judge_accuracy=self._accuracy(face_labels, judge_probabilities,
                                                      global_faces),
                        judge_admitted_fraction=_global_mean(verdict, global_faces))
                c_translated = losses.density_weighted_cross_entropy(
                    face_labels, translated_logits, weights, _denominator(
                        cfg.translated_normalizer, weights, global_faces))
                c_loss += cfg.lambda_t * aux * c_translated

                real = labeled
                real_labels = labeled_labels
                if has_unlabeled:
                    real = tf.concat([labeled, unlabeled], axis=0)
                    # An unlabeled clip scores with its pseudo-label once it
                    # has one, else unconditionally.
                    real_labels = tf.concat(
                        [labeled_labels, tf.where(confidence > 0, pseudo, -1)], axis=0)
                num_real = tf.shape(real)[0]
                global_real = num_real * replicas
                scores = self.discriminator(
                    [tf.concat([real, translated], axis=0),
                     tf.concat([real_labels, face_labels], axis=0)], training=True)
                real_scores, fake_scores = scores[:num_real], scores[num_real:]
                d_loss = losses.DISCRIMINATOR_LOSSES[cfg.adversarial_loss](
                    real_scores, fake_scores, global_real, global_faces)
                if cfg.r1_gamma > 0:
                    penalty = self._r1_penalty(real, real_labels, global_real)
                    d_loss += penalty
                    logs["r1_penalty"] = penalty
                g_adversarial = losses.GENERATOR_LOSSES[cfg.adversarial_loss](
                    fake_scores, global_faces)
                g_class = losses.cross_entropy(face_labels, translated_logits,
                                               global_faces)
                g_loss = g_adversarial + cfg.lambda_cls * gate * g_class
                if cfg.lambda_diversity > 0:
                    # Local pairs; / replicas so the summed gradients average them.
                    g_diversity = losses.mode_seeking_loss(
                        translated, tf.concat(generator_inputs[:1] + generator_inputs[2:],
                                              axis=1), face_labels) / float(replicas)
                    g_loss += cfg.lambda_diversity * g_diversity
                    logs["g_diversity_loss"] = g_diversity
                if cfg.lambda_density > 0:
                    # Reaches G through C's φ; only G's variables apply it.
                    own_log_densities = density.own_class_kde_log_prob(
                        embeddings[-num_faces:], face_labels, self.class_banks,
                        self.bandwidths, self.class_bank_mask > 0.5)
                    shortfall = density.density_shortfall(
                        own_log_densities, face_labels, self.bank_log_densities,
                        self.bandwidths, self.threshold(), self.class_bank_mask > 0.5)
                    g_density = tf.reduce_sum(shortfall) / tf.cast(global_faces, tf.float32)
                    g_loss += cfg.lambda_density * gate * g_density
                    logs["g_density_loss"] = g_density
                scaled_g = self.generator_optimizer.scale_loss(g_loss)
                scaled_d = self.discriminator_optimizer.scale_loss(d_loss)
                logs.update(d_loss=d_loss, g_adversarial_loss=g_adversarial,
                            g_class_loss=g_class, c_translated_loss=c_translated,
                            mean_density_weight=_global_mean(weights, global_faces),
                            admitted_fraction=_global_mean(admitted, global_faces),
                            translated_accuracy=self._accuracy(
                                face_labels, translated_logits, global_faces))

            # Identity unless the optimizer scales losses (mixed precision).
            scaled_c = self.classifier_optimizer.scale_loss(c_loss)

        self._apply(self.classifier_optimizer, tape, scaled_c,
                    self.classifier.trainable_variables)
        if self.uses_teacher:
            self._update_teacher()
        total = c_loss
        if self.use_translation:
            self._apply(self.generator_optimizer, tape, scaled_g,
                        self.generator_variables)
            self._apply(self.discriminator_optimizer, tape, scaled_d,
                        self.discriminator.trainable_variables)
            total = total + g_loss + d_loss
        del tape
        logs.update(c_loss=c_loss, c_labeled_loss=c_labeled,
                    labeled_accuracy=self._accuracy(labeled_labels, labeled_logits,
                                                    global_labeled))
        if "annealing_threshold" in self.trackers:
            logs["annealing_threshold"] = self.threshold()
        # Replica losses are shares of the global loss: sum them to log it.
        for name in ("c_loss", "c_labeled_loss", "c_unlabeled_loss",
                     "c_translated_loss", "c_consistency_loss", "d_loss", "r1_penalty",
                     "g_adversarial_loss", "g_class_loss", "g_diversity_loss",
                     "g_density_loss"):
            if name in logs:
                logs[name] = _global_sum(logs[name])
        logs["loss"] = _global_sum(total)
        for name, value in logs.items():
            self.trackers[name].update_state(value)
        return {name: self.trackers[name].result() for name in logs}

    def _update_teacher(self):
        """teacher ← m · teacher + (1 − m) · C, weight by weight (C's
        non-trainable weights, if any, are copied alike)."""
        momentum = self.config.loss.teacher_momentum
        for teacher, student in zip(self.teacher.weights, self.classifier.weights):
            teacher.assign(momentum * teacher + (1.0 - momentum) * student)

    def _apply(self, optimizer, tape, loss, variables):
        gradients = tape.gradient(loss, variables)
        optimizer.apply_gradients(
            [(g, v) for g, v in zip(gradients, variables) if g is not None])

    @staticmethod
    def _accuracy(labels, logits, global_count):
        correct = tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32),
                                   labels), tf.float32)
        return _global_mean(correct, global_count)

    def _translation_weights(self, translated_embeddings, labels):
        """Density weights w_i of translated samples, whether each is admitted
        (w_i >= 1/2, i.e. reliable and at least as dense as τ(t)), and the two
        parts of that gate per sample ({"reliable_fraction": r_i >= ρ,
        "dense_fraction": q_i >= τ(t)}, 0/1; empty without density weights)."""
        cfg = self.config.loss
        if not cfg.use_density_weights:
            ones = tf.ones_like(labels, tf.float32)
            return ones, ones, {}
        threshold = self.threshold()
        result = density.translation_density_weights(
            translated_embeddings, labels, self.class_banks,
            self.class_bank_mask > 0.5, self.bandwidths, self.bank_log_densities,
            threshold, cfg.min_reliability, cfg.weight_temperature,
            class_priors=self.class_priors)
        weights = tf.stop_gradient(result.weights)
        gates = {"reliable_fraction": tf.cast(
                     result.reliabilities >= cfg.min_reliability, tf.float32),
                 "dense_fraction": tf.cast(result.density_ranks >= threshold, tf.float32)}
        return weights, tf.cast(weights >= 0.5, tf.float32), gates

    def _r1_penalty(self, real, real_labels, global_real):
        with tf.GradientTape() as inner:
            inner.watch(real)
            total_score = tf.reduce_sum(
                self.discriminator([real, real_labels], training=False))
        gradients = inner.gradient(total_score, real)
        return losses.r1_penalty(gradients, self.config.loss.r1_gamma, global_real)

    # -- State the callbacks refresh (cross-replica context) ----------------------------

    def set_class_banks(self, embeddings: np.ndarray, labels: np.ndarray) -> None:
        """Fills the per-class banks with φ of labeled clips, their bandwidths
        and leave-one-out densities, and the class priors (label frequencies).

        embeddings: `[N, d]` float32; labels: `[N]` int class ids.
        """
        banks = np.zeros(self.class_banks.shape, np.float32)
        mask = np.zeros(self.class_bank_mask.shape, np.float32)
        for c in range(self.num_classes):
            rows = embeddings[labels == c][:self.bank_size]
            banks[c, :len(rows)] = rows
            mask[c, :len(rows)] = 1.0
        setting = bandwidth_setting(self.config.loss.density_bandwidth)
        if isinstance(setting, str):
            bandwidths = density.class_kde_bandwidths(banks, setting, mask > 0.5)
        else:
            bandwidths = tf.fill([self.num_classes], setting)
        bank_log_densities = density.class_leave_one_out_kde_log_prob(
            banks, bandwidths, mask > 0.5)
        counts = np.bincount(labels, minlength=self.num_classes).astype(np.float32)
        # A class without labeled clips keeps a tiny prior, not 0 (log 0 = -inf).
        self.class_priors.assign(np.maximum(counts, 0.5) / max(counts.sum(), 1.0))
        self.class_banks.assign(banks)
        self.class_bank_mask.assign(mask)
        self.bandwidths.assign(bandwidths)
        self.bank_log_densities.assign(bank_log_densities)

    def set_pseudo_labels(self, indices: np.ndarray, labels: np.ndarray,
                          confidences: np.ndarray) -> None:
        """Writes pseudo-labels (−1: none) and confidences (0: not collected)
        at the unlabeled clips' `index`."""
        new_labels = np.full(self.pseudo_labels.shape, -1, np.int32)
        new_confidences = np.zeros(self.pseudo_confidences.shape, np.float32)
        new_labels[indices] = labels
        new_confidences[indices] = confidences
        self.pseudo_labels.assign(new_labels)
        self.pseudo_confidences.assign(new_confidences)
