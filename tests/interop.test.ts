// Weights as users have them (shared/fixtures/interop): PyTorch pickles read by the
// restricted unpickler, malicious and corrupt files refused, state dicts found in
// the usual wrappers, single-file SD checkpoints mapped to diffusers, and the
// dr convert / dr inspect commands (compiled CLI: npm run build first).
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DrError } from '../src/errors.js';
import { SD_COMPONENTS, SingleFileSd, type SdComponent } from '../src/graph/sd/single_file.js';
import { Checkpoint, TorchSource } from '../src/weights/checkpoint.js';
import { call, global, int, MARK, pickle, stateDictPickle, str, writeTorchZip, type TensorSpec } from '../bench/torch_writer.js';
import { Engine } from '../src/engine/engine.js';
import { StableDiffusion } from '../src/graph/sd/pipeline.js';
import { SafetensorsFile, writeSafetensors } from '../src/weights/safetensors.js';
import { absMax, expectClose, FIXTURES, REPO } from './helpers.js';

const INTEROP = path.join(FIXTURES, 'interop');
const PTH = path.join(INTEROP, 'pth');
let tmp: string;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dr-interop-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Same names, dtypes, shapes and bits. */
function expectSameTensors(actual: Checkpoint, expected: Checkpoint): void {
  expect(actual.keys().sort()).toEqual(expected.keys().sort());
  for (const k of expected.keys()) {
    const [a, b] = [actual.info(k), expected.info(k)];
    expect({ dtype: a.dtype, shape: a.shape }, k).toEqual({ dtype: b.dtype, shape: b.shape });
    expect(Buffer.compare(Buffer.from(actual.readBytes(k)), Buffer.from(expected.readBytes(k))), k).toBe(0);
  }
}

/** The one-line user error of loading `file`. */
function loadError(file: string, open: (f: string) => unknown = Checkpoint.open): DrError {
  try {
    open(file);
  } catch (e) {
    expect(e).toBeInstanceOf(DrError);
    const err = e as DrError;
    expect(err.message).not.toContain('\n');
    expect(err.message.startsWith(file)).toBe(true);
    return err;
  }
  throw new Error(`${file} loaded`);
}

describe('PyTorch checkpoints', () => {
  it.each([
    ['unet_zip.pth', 'unet.safetensors', 'torch zip'],
    ['unet_legacy.pth', 'unet.safetensors', 'torch legacy'],
    ['unet_fp16.pth', 'unet_fp16.safetensors', 'torch zip'],
    ['unet_bf16.pth', 'unet_bf16.safetensors', 'torch zip'],
    ['lightning_style.ckpt', 'unet.safetensors', 'torch zip'],
    ['shared_views.pth', 'expected.safetensors', 'torch zip'],
    ['lpips_v0.1/alex.pth', 'lpips_v0.1/alex.safetensors', 'torch legacy'],
    ['lpips_v0.1/vgg.pth', 'lpips_v0.1/vgg.safetensors', 'torch legacy'],
  ])('%s gives exactly the tensors of %s', (file, expected, format) => {
    const src = TorchSource.open(path.join(PTH, file));
    expect(src.format).toBe(format);
    const [a, b] = [Checkpoint.fromSource(file, src), Checkpoint.open(path.join(PTH, expected))];
    try {
      expectSameTensors(a, b);
    } finally {
      a.close();
      b.close();
    }
  });

  it('a safetensors file named .ckpt is read as safetensors, even when its first byte is 0x80 like a pickle', () => {
    const file = path.join(tmp, 'renamed.ckpt');
    for (let pad = 0; ; pad++) {
      writeSafetensors(file, [{ name: 'w', dtype: 'F32', shape: [1], data: new Float32Array([1.5]) }], { pad: 'x'.repeat(pad) });
      if (fs.readFileSync(file)[0] === 0x80) break;
    }
    const ck = Checkpoint.open(file);
    expect([...ck.readF32('w')]).toEqual([1.5]);
    ck.close();
  });

  it('finds the Lightning state dict under "state_dict"', () => {
    const src = TorchSource.open(path.join(PTH, 'lightning_style.ckpt'));
    expect(src.stateDict.where).toBe('state_dict');
    src.close();
  });

  it('keeps strides, offsets and shared storages as torch saved them (shared_views_layout.json)', () => {
    const layout = JSON.parse(fs.readFileSync(path.join(PTH, 'shared_views_layout.json'), 'utf8')) as Record<string, { shape: number[]; stride: number[]; storage_offset: number; storage: string }>;
    const src = TorchSource.open(path.join(PTH, 'shared_views.pth'));
    const views = src.stateDict.tensors;
    expect(Object.keys(layout).length).toBe(20);
    for (const [name, l] of Object.entries(layout)) {
      const v = views.get(name)!;
      expect({ shape: v.shape, stride: v.stride, offset: v.offset }, name).toEqual({ shape: l.shape, stride: l.stride, offset: l.storage_offset });
      if (l.storage.startsWith('shared:')) expect(v.storage, name).toBe(views.get(l.storage.slice(7))!.storage);
    }
    src.close();
  });
});

describe('malicious pickles', () => {
  it.each([
    ['os_system.pth', 'os.system'],
    ['builtins_eval.pth', 'builtins.eval'],
    ['subprocess_popen.pth', 'subprocess.Popen'],
    ['zip_os_system.pth', 'posix.system'],
    ['legacy_os_system.pth', 'os.system'],
  ])('%s is refused, naming %s', (file, refused) => {
    const err = loadError(path.join(PTH, 'malicious', file));
    expect(err.message).toContain(`"${refused}"`);
    expect(err.message).toContain('refused');
  });

  it('refuses every way of reaching a callable, and nothing runs (marker file)', () => {
    const marker = path.join(tmp, 'pwned');
    const cmd = `touch ${marker}`;
    const files: [string, Buffer, string][] = [
      ['global_reduce.pth', pickle(call('os', 'system', str(cmd))), 'os.system'],
      ['posix.pth', pickle(call('posix', 'system', str(cmd))), 'posix.system'],
      ['exec.pth', pickle(call('builtins', 'exec', str(`import os; os.system(${JSON.stringify(cmd)})`))), 'builtins.exec'],
      // protocol 4 STACK_GLOBAL: module and name come from the stack
      ['stack_global.pth', Buffer.concat([Buffer.from([0x80, 4]), str('os'), str('system'), Buffer.from([0x93]), MARK, str(cmd), Buffer.from([0x74, 0x52, 0x2e])]), 'os.system'],
      // protocol 0 INST: import and call in one opcode
      ["inst.pth", Buffer.concat([Buffer.from([0x80, 2]), MARK, str(cmd), Buffer.from(`ios\nsystem\n.`, 'latin1')]), 'os.system'],
      // an allowed global is still not a licence to call anything else through it
      ['getattr.pth', pickle(call('builtins', 'getattr', global('torch._utils', '_rebuild_tensor_v2'), str('__globals__'))), 'builtins.getattr'],
    ];
    for (const [name, bytes, refused] of files) {
      fs.writeFileSync(path.join(tmp, name), bytes);
      expect(loadError(path.join(tmp, name)).message).toContain(`"${refused}"`);
    }
    // A real torch zip whose state dict has valid tensors and one poisoned entry: the whole file is refused.
    const w: TensorSpec = { name: 'w', dtype: 'F32', shape: [2], data: new Uint8Array(8) };
    const zipFile = path.join(tmp, 'zip_marker.pth');
    writeTorchZip(zipFile, stateDictPickle([w], [['x', call('os', 'system', str(cmd))]]), [w]);
    expect(loadError(zipFile).message).toContain('"os.system"');
    expect(fs.existsSync(marker)).toBe(false);
  });
});

describe('corrupt files', () => {
  it.each([
    ['truncated_zip.pth', 'end-of-central-directory'],
    ['missing_storage.pth', 'storage "1" is missing'],
    ['out_of_bounds_view.pth', 'offset + extent exceeds the storage'],
    ['short_storage.pth', 'holds 32 bytes but is declared as 16 F32 elements'],
  ])('%s: one clear line', (file, fragment) => {
    expect(loadError(path.join(PTH, 'corrupt', file)).message).toContain(fragment);
  });

  it('a pickle cut short, garbage, an empty file', () => {
    const whole = fs.readFileSync(path.join(PTH, 'lpips_v0.1/alex.pth'));
    const cases: [string, Buffer, string][] = [
      ['cut.pth', whole.subarray(0, 700), 'ends early'],
      ['storage_cut.pth', whole.subarray(0, whole.length - 100), 'past the end of the file'],
      ['garbage.pth', Buffer.from([0x80, 2, 0xff, 0xff]), 'unknown opcode 0xff'],
      ['empty.pth', Buffer.alloc(0), 'empty'],
    ];
    for (const [name, bytes, fragment] of cases) {
      fs.writeFileSync(path.join(tmp, name), bytes);
      expect(loadError(path.join(tmp, name), TorchSource.open).message).toContain(fragment);
    }
  });
});

/** A pickled dict of raw pickle fragments. */
const dict = (entries: [string, Buffer][]): Buffer =>
  Buffer.concat([Buffer.from([0x7d]), MARK, ...entries.map(([k, v]) => Buffer.concat([str(k), v])), Buffer.from([0x75])]);
/** The state-dict pickle of `tensors` without its PROTO/STOP, to nest inside another dict. */
const inner = (tensors: TensorSpec[]): Buffer => stateDictPickle(tensors).subarray(2, -1);

describe('state dict discovery', () => {
  const t = (name: string): TensorSpec => ({ name, dtype: 'F32', shape: [1], data: new Uint8Array(4) });

  it('bare, nested, module. prefixes, EMA twins', () => {
    const a = [t('module.conv.weight'), t('module.conv.bias')];
    const file = (name: string, body: Buffer): string => {
      const f = path.join(tmp, name);
      writeTorchZip(f, pickle(body), a);
      return f;
    };
    const bare = TorchSource.open(file('bare.pth', inner(a)));
    expect([...bare.tensors.keys()]).toEqual(['conv.weight', 'conv.bias']);
    expect(bare.stateDict).toMatchObject({ where: '', strippedPrefix: 'module.' });

    const nested = TorchSource.open(file('nested.pth', dict([['model', inner(a)], ['epoch', int(3)]])));
    expect(nested.stateDict.where).toBe('model');

    // Two state dicts sharing storages (raw and EMA): no guess, a clear error, then --key.
    const twins = file('twins.pth', dict([['params', inner(a)], ['params_ema', inner(a)]]));
    expect(loadError(twins, (f) => TorchSource.open(f)).message).toMatch(/2 state dicts \("params", "params_ema"\); choose one with --key/);
    expect(TorchSource.open(twins, 'params_ema').stateDict.where).toBe('params_ema');
    expect(loadError(twins, (f) => TorchSource.open(f, 'ema')).message).toContain('no entry "ema"');

    const none = file('none.pth', dict([['epoch', int(3)]]));
    expect(loadError(none, (f) => TorchSource.open(f)).message).toContain('no state dict');
    for (const s of [bare, nested]) s.close();
  });
});

describe('single-file Stable Diffusion (original layout)', () => {
  const SINGLE = path.join(INTEROP, 'single-file/sd-tiny.safetensors');
  const SD = path.join(FIXTURES, 'sd-tiny');
  const WEIGHTS: Record<SdComponent, string> = {
    unet: 'unet/diffusion_pytorch_model.safetensors',
    vae: 'vae/diffusion_pytorch_model.safetensors',
    text_encoder: 'text_encoder/model.safetensors',
  };

  it('maps key for key as sd-tiny.mapping.json says', () => {
    const rows = JSON.parse(fs.readFileSync(path.join(INTEROP, 'single-file/sd-tiny.mapping.json'), 'utf8')).keys as
      { original: string; component: string; diffusers: string; diffusers_shape: number[]; original_shape: number[] }[];
    const sd = SingleFileSd.open(SINGLE, SD);
    try {
      expect(sd.ignored).toEqual([]);
      const mine = new Map(sd.mapping.map((m) => [m.original, m]));
      expect(mine.size).toBe(rows.length);
      for (const r of rows) {
        const m = mine.get(r.original)!;
        expect({ component: m?.component, diffusers: m?.diffusers }, r.original).toEqual({ component: r.component, diffusers: r.diffusers });
        expect(m.shape ?? r.original_shape, r.original).toEqual(r.diffusers_shape);
      }
    } finally {
      sd.close();
    }
  });

  it('each component has exactly the tensors of the sd-tiny diffusers files', () => {
    const sd = SingleFileSd.open(SINGLE, SD);
    try {
      for (const c of SD_COMPONENTS) {
        const expected = Checkpoint.open(path.join(SD, WEIGHTS[c]));
        expectSameTensors(sd.component(c), expected);
        expected.close();
      }
    } finally {
      sd.close();
    }
  });

  it('a Lightning .ckpt with EMA and schedule keys maps the same; the extras are left out', () => {
    const st = SafetensorsFile.open(SINGLE);
    const tensors: TensorSpec[] = [...st.tensors.values()].map((e) => ({ name: e.name, dtype: e.dtype, shape: e.shape, data: st.readBytes(e.name) }));
    st.close();
    const extras: TensorSpec[] = [
      { name: 'model_ema.diffusion_modelinput_blocks00weight', dtype: 'F32', shape: [2], data: new Uint8Array(8) },
      { name: 'model_ema.num_updates', dtype: 'I64', shape: [], data: new Uint8Array(8) },
      { name: 'betas', dtype: 'F32', shape: [3], data: new Uint8Array(12) },
      { name: 'cond_stage_model.transformer.text_model.embeddings.position_ids', dtype: 'I64', shape: [1, 77], data: new Uint8Array(77 * 8) },
    ];
    const all = [...tensors, ...extras];
    const ckpt = path.join(tmp, 'sd-tiny.ckpt');
    writeTorchZip(ckpt, pickle(dict([['state_dict', inner(all)], ['global_step', int(470000)]])), all);
    const sd = SingleFileSd.open(ckpt, SD);
    try {
      expect(sd.ignored.sort()).toEqual(extras.map((e) => e.name).sort());
      for (const c of SD_COMPONENTS) {
        const expected = Checkpoint.open(path.join(SD, WEIGHTS[c]));
        expectSameTensors(sd.component(c), expected);
        expected.close();
      }
    } finally {
      sd.close();
    }
  });

  it('explains configs that do not fit the file, and files that are not SD', () => {
    // SD 1.5's shipped configs (the default): same block structure, other sizes.
    expect(loadError(SINGLE, (f) => SingleFileSd.open(f)).message)
      .toMatch(/"model\.diffusion_model\.input_blocks\.0\.0\.weight" has shape \[32, 4, 3, 3\] but unet "conv_in\.weight" is \[320, 4, 3, 3\] .*--config/);
    const unet = path.join(PTH, 'unet.safetensors');
    expect(loadError(unet, (f) => SingleFileSd.open(f)).message).toContain('not a single-file Stable Diffusion checkpoint');
    const cfg = path.join(tmp, 'one-layer');
    fs.cpSync(SD, cfg, { recursive: true, filter: (f) => !f.endsWith('.safetensors') });
    const json = path.join(cfg, 'unet/config.json');
    fs.writeFileSync(json, JSON.stringify({ ...JSON.parse(fs.readFileSync(json, 'utf8')), layers_per_block: 1 }));
    expect(loadError(SINGLE, (f) => SingleFileSd.open(f, cfg)).message).toMatch(/key "model\.diffusion_model\.\S+" fits no unet tensor/);
  });
});

describe('--sd FILE: the pipeline from a single file', () => {
  it('loads sd-tiny.safetensors with sd-tiny configs; its UNet reproduces unet_io', async () => {
    const e = await Engine.create();
    const SD = path.join(FIXTURES, 'sd-tiny');
    const sd = StableDiffusion.load(e, path.join(INTEROP, 'single-file/sd-tiny.safetensors'), 'f32', SD);
    const io = SafetensorsFile.open(path.join(SD, 'io/unet_io.safetensors'));
    const input = (name: string) => e.upload(io.readF32(name), io.info(name).shape);
    const out = sd.unet.forward(e, input('sample'), io.readF32('timestep')[0], input('encoder_hidden_states'));
    const ref = io.readF32('output');
    expectClose(await e.read(out), ref, 0, 1e-4 * Math.max(1, absMax(ref)));
    io.close();
  });
});

describe('dr convert, dr inspect (the built CLI; npm run build first)', () => {
  const CLI = path.join(REPO, 'dist/src/cli/main.js');
  const SINGLE = path.join(INTEROP, 'single-file/sd-tiny.safetensors');
  const SD = path.join(FIXTURES, 'sd-tiny');
  const dr = async (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => {
    try {
      const { stdout, stderr } = await promisify(execFile)('node', [CLI, ...args], { maxBuffer: 64 << 20 });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };
  /** Exit 1 and one `dr: ` line (Dawn's "Warning:" notices aside), no stack. */
  const expectUserError = (r: { code: number; stderr: string }, ...fragments: string[]): void => {
    expect(r.code).toBe(1);
    const lines = r.stderr.split('\n').filter((l) => l && !l.startsWith('Warning:'));
    expect(lines).toHaveLength(1);
    for (const f of fragments) expect(lines[0]).toContain(f);
  };

  it('single file → diffusers folder; dr forward on its UNet reproduces unet_io', async () => {
    const out = path.join(tmp, 'sd-tiny-converted');
    const r = await dr('convert', SINGLE, '-o', out, '--config', SD);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(out);
    for (const c of ['unet', 'vae', 'text_encoder'] as const) {
      const weights = c === 'text_encoder' ? 'model.safetensors' : 'diffusion_pytorch_model.safetensors';
      const [a, b] = [Checkpoint.open(path.join(out, c, weights)), Checkpoint.open(path.join(SD, c, weights))];
      expectSameTensors(a, b);
      a.close();
      b.close();
      expect(fs.readFileSync(path.join(out, c, 'config.json'), 'utf8')).toBe(fs.readFileSync(path.join(SD, c, 'config.json'), 'utf8'));
    }
    for (const f of ['model_index.json', 'scheduler/scheduler_config.json', 'tokenizer/vocab.json']) expect(fs.existsSync(path.join(out, f)), f).toBe(true);

    const io = path.join(SD, 'io/unet_io.safetensors');
    const y = path.join(tmp, 'unet_out.safetensors');
    const f = await dr('forward', '--model', path.join(out, 'unet'), '--inputs', io, '--out', y);
    expect(f.code, f.stderr).toBe(0);
    const [mine, ref] = [SafetensorsFile.open(y), SafetensorsFile.open(io)];
    for (const name of ['output', 'case1.output']) {
      const want = ref.readF32(name);
      expectClose(mine.readF32(name), want, 0, 1e-4 * Math.max(1, absMax(want)));
    }
    mine.close();
    ref.close();

    expectUserError(await dr('convert', SINGLE, '-o', out, '--config', SD), 'already exists');
  });

  it('SD 1.5 configs on a file of another size: one line, nothing written', async () => {
    const out = path.join(tmp, 'wrong-size');
    expectUserError(await dr('convert', SINGLE, '-o', out), 'has shape [32, 4, 3, 3] but unet "conv_in.weight" is [320, 4, 3, 3]', '--config');
    expect(fs.existsSync(out)).toBe(false);
  });

  it('any allowed pickle → .safetensors; malicious and corrupt files → one line, no output', async () => {
    const out = path.join(tmp, 'unet.safetensors');
    const r = await dr('convert', path.join(PTH, 'lightning_style.ckpt'), '-o', out);
    expect(r.code, r.stderr).toBe(0);
    const [a, b] = [Checkpoint.open(out), Checkpoint.open(path.join(PTH, 'unet.safetensors'))];
    expectSameTensors(a, b);
    a.close();
    b.close();
    for (const [file, fragment] of [['malicious/zip_os_system.pth', '"posix.system"'], ['corrupt/out_of_bounds_view.pth', 'exceeds the storage']]) {
      const bad = path.join(tmp, 'bad.safetensors');
      expectUserError(await dr('convert', path.join(PTH, file), '-o', bad), fragment);
      expect(fs.readdirSync(tmp).filter((n) => n.startsWith('bad.safetensors'))).toEqual([]);
    }
    expectUserError(await dr('convert', path.join(PTH, 'unet_zip.pth'), '-o', path.join(tmp, 'folder')), 'not a single-file Stable Diffusion checkpoint', '-o FILE.safetensors');
  });

  it('dr inspect: layouts, totals, --json', async () => {
    const json = async (target: string) => {
      const r = await dr('inspect', target, '--json');
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout);
    };
    const ckpt = await json(path.join(PTH, 'lightning_style.ckpt'));
    expect(ckpt).toMatchObject({ layout: 'diffusers UNet', parameters: 158004, parts: [{ format: 'torch zip', stateDict: { where: 'state_dict' } }] });
    expect(ckpt.parts[0].tensors).toHaveLength(684);
    expect(ckpt.parts[0].tensors.find((t: { name: string }) => t.name === 'conv_in.weight')).toEqual({ name: 'conv_in.weight', dtype: 'F32', shape: [8, 4, 3, 3], bytes: 1152 });
    expect((await json(path.join(PTH, 'lpips_v0.1/alex.pth'))).layout).toBe('lpips (linear heads)');
    expect((await json(SINGLE)).layout).toMatch(/^original single-file Stable Diffusion \(UNet 684, VAE 248, text encoder 36 tensors/);
    const pipe = await json(SD);
    expect(pipe.layout).toBe('diffusers pipeline folder');
    expect(pipe.parts.map((p: { layout: string }) => p.layout)).toEqual(['transformers clip_text_model', 'diffusers UNet2DConditionModel', 'diffusers AutoencoderKL']);

    const text = await dr('inspect', path.join(PTH, 'lpips_v0.1/alex.pth'));
    expect(text.stdout).toContain('torch legacy (state dict at the top level), lpips (linear heads)');
    expect(text.stdout).toMatch(/lin0\.model\.1\.weight\s+F32\s+\[1, 64, 1, 1\]\s+256/);
    expect(text.stdout).toContain('5 tensors, 1,152 parameters');
    expectUserError(await dr('inspect', path.join(PTH, 'corrupt/short_storage.pth')), 'short_storage.pth', 'holds 32 bytes');
    expectUserError(await dr('inspect', path.join(PTH, 'malicious/os_system.pth')), '"os.system"');
  });
});
