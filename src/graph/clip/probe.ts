// The paper's Eq. 1: how strongly an image matches each degradation description,
// s_i = exp(S·cos_i) / Σ_j exp(S·cos_j), with cos_i the cosine similarity of the
// CLIP image and text embeddings.
import type { Engine } from '../../engine/engine.js';
import type { Tensor } from '../../engine/tensor.js';
import { softmax } from '../../engine/ops/norms.js';
import type { ClipModel } from './model.js';
import type { ClipTokenizer } from './tokenizer.js';

/** The paper's eight degradation types, in its order, as short photo descriptions. */
export const DEGRADATION_TEXTS = [
  'a noisy photo',
  'a low-light photo',
  'a hazy photo',
  'a rainy photo',
  'a photo with raindrops on it',
  'a snowy photo',
  'a blurry photo',
  'a JPEG-compressed photo',
];

export interface ProbeScore {
  text: string;
  cosine: number;
  probability: number;
}

/** Text embeddings computed once, then any number of image batches scored. */
export class DegradationProbe {
  private readonly textEmbeds: Tensor; // [T, E]

  constructor(private readonly e: Engine, private readonly model: ClipModel, tokenizer: ClipTokenizer, readonly texts: string[]) {
    const L = tokenizer.contextLength;
    const ids = new Int32Array(texts.length * L);
    texts.forEach((t, i) => ids.set(tokenizer.tokenize(t, { contextLength: L }), i * L));
    this.textEmbeds = e.keep(e.tidy(() => model.encodeText(e, ids, L).embeds));
  }

  /** pixels: [B, 3, S, S] CLIP-normalised. Returns each image's scores in text order. */
  async score(pixels: Tensor, scale: number): Promise<ProbeScore[][]> {
    const { e, model } = this;
    const [cos, prob] = e.tidy(() => {
      const c = model.cosine(e, model.encodeImage(e, pixels).embeds, this.textEmbeds); // [B, T]
      return [c, softmax(e, c, scale)];
    });
    const [cosines, probabilities] = [await e.read(cos), await e.read(prob)];
    e.release(cos);
    e.release(prob);
    const T = this.texts.length;
    return Array.from({ length: pixels.shape[0] }, (_, b) =>
      this.texts.map((text, i) => ({ text, cosine: cosines[b * T + i], probability: probabilities[b * T + i] })));
  }

  dispose(): void {
    this.e.release(this.textEmbeds);
  }
}
