/**
 * Size-class buffer pool: a released buffer waits in its class for the next
 * request of that class. Classes are powers of two and their 1.5× midpoints, so at
 * most a third of a buffer is slack. Tracks bytes held (pool + in use + weights +
 * the CPU path's pooled activation textures) and its peak, which benchmarks report as
 * peak GPU memory.
 */
export class BufferPool {
  private readonly free = new Map<number, GPUBuffer[]>();
  /** Bytes of buffers created by the pool, in use or waiting. */
  private pooledBytes = 0;
  private weightBytes = 0;
  private textureBytes = 0;
  inUseBytes = 0;
  peakBytes = 0;
  /** What the peak was made of: weights, pooled activation buffers, pooled activation textures. */
  peakSplit = { weights: 0, buffers: 0, textures: 0 };

  constructor(private readonly device: GPUDevice) {}

  acquire(bytes: number): GPUBuffer {
    const size = sizeClass(bytes);
    const buffer = this.free.get(size)?.pop() ?? this.create(size);
    this.inUseBytes += size;
    return buffer;
  }

  release(buffer: GPUBuffer): void {
    this.inUseBytes -= buffer.size;
    const list = this.free.get(buffer.size);
    if (list) list.push(buffer);
    else this.free.set(buffer.size, [buffer]);
  }

  countWeight(bytes: number): void {
    this.weightBytes += bytes;
    this.notePeak();
  }

  /** Activation textures made (bytes > 0) or destroyed (< 0) by the texture pool. */
  countTextures(bytes: number): void {
    this.textureBytes += bytes;
    this.notePeak();
  }

  /** A weight's bytes freed (a retired weight texture). */
  uncountWeight(bytes: number): void {
    this.weightBytes -= bytes;
  }

  /** Frees the waiting buffers (between models or images of very different sizes). */
  trim(): void {
    for (const list of this.free.values()) for (const b of list) {
      this.pooledBytes -= b.size;
      b.destroy();
    }
    this.free.clear();
  }

  get totalBytes(): number {
    return this.pooledBytes + this.weightBytes + this.textureBytes;
  }

  /** activationBytes: pooled buffers; activationTextureBytes: pooled textures (CPU path). */
  get stats(): { weightBytes: number; activationBytes: number; activationTextureBytes: number; inUseBytes: number; peakBytes: number } {
    return {
      weightBytes: this.weightBytes, activationBytes: this.pooledBytes, activationTextureBytes: this.textureBytes,
      inUseBytes: this.inUseBytes, peakBytes: this.peakBytes,
    };
  }

  private create(size: number): GPUBuffer {
    this.pooledBytes += size;
    this.notePeak();
    return this.device.createBuffer({
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
  }

  private notePeak(): void {
    if (this.totalBytes <= this.peakBytes) return;
    this.peakBytes = this.totalBytes;
    this.peakSplit = { weights: this.weightBytes, buffers: this.pooledBytes, textures: this.textureBytes };
  }
}

export function sizeClass(bytes: number): number {
  const n = Math.max(256, bytes);
  const pow = 2 ** Math.ceil(Math.log2(n));
  return n <= pow * 0.75 ? pow * 0.75 : pow;
}
