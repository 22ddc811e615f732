/**
 * The text clean-up OpenAI's CLIP tokenizer applies before BPE (`simple_tokenizer.py`):
 * `whitespace_clean(basic_clean(text)).lower()`, where basic_clean is `ftfy.fix_text`
 * followed by `html.unescape` twice.
 *
 * `fixText` is the subset of ftfy 6's `fix_text` defaults that can change a prompt:
 * HTML entities, mojibake of UTF-8 read as Latin-1 / Windows-1252 (ftfy's badness
 * heuristic restricted to the characters those two encodings can produce, restore_byte_a0,
 * decode_inconsistent_utf8, C1 controls), Latin ligatures, character width, curly quotes,
 * line breaks, surrogates, terminal escapes, control characters and NFC. Left out: mojibake
 * through other code pages (1250/1251/1253/1254/1257, MacRoman, cp437), CESU-8 and
 * U+FFFD-damaged sequences. `htmlUnescape` is Python's `html.unescape` with the HTML 4
 * Latin-1 and typographic entity names; other HTML5 names stay as written.
 */

/** Python's `\s` / `str.isspace` (JS's `\s` lacks \x1c-\x1f and \x85 and adds \ufeff). */
export const PY_SPACE = '\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';

/** Byte i -> the character Latin-1 / Windows-1252 decode it to. Like ftfy's sloppy codec,
 *  1252's unassigned 81, 8D, 8F, 90, 9D pass through. (Node 20's TextDecoder('windows-1252')
 *  decodes as Latin-1, hence the table.) */
const LATIN1 = String.fromCharCode(...Array.from({ length: 256 }, (_, i) => i));
const CP1252 = LATIN1.slice(0, 0x80) + '€\x81‚ƒ„…†‡ˆ‰Š‹Œ\x8dŽ\x8f\x90‘’“”•–—˜™š›œ\x9džŸ' + LATIN1.slice(0xa0);
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

// --- HTML entities ------------------------------------------------------------------

const LATIN1_NAMES = ('nbsp iexcl cent pound curren yen brvbar sect uml copy ordf laquo not shy reg macr deg ' +
  'plusmn sup2 sup3 acute micro para middot cedil sup1 ordm raquo frac14 frac12 frac34 iquest Agrave Aacute ' +
  'Acirc Atilde Auml Aring AElig Ccedil Egrave Eacute Ecirc Euml Igrave Iacute Icirc Iuml ETH Ntilde Ograve ' +
  'Oacute Ocirc Otilde Ouml times Oslash Ugrave Uacute Ucirc Uuml Yacute THORN szlig agrave aacute acirc atilde ' +
  'auml aring aelig ccedil egrave eacute ecirc euml igrave iacute icirc iuml eth ntilde ograve oacute ocirc ' +
  'otilde ouml divide oslash ugrave uacute ucirc uuml yacute thorn yuml').split(' ');
const ASCII_NAMES = 'quot:22 amp:26 lt:3c gt:3e QUOT:22 AMP:26 LT:3c GT:3e COPY:a9 REG:ae';
const OTHER_NAMES = 'apos:27 ndash:2013 mdash:2014 lsquo:2018 rsquo:2019 sbquo:201a ldquo:201c rdquo:201d ' +
  'bdquo:201e dagger:2020 Dagger:2021 bull:2022 hellip:2026 permil:2030 prime:2032 Prime:2033 lsaquo:2039 ' +
  'rsaquo:203a oline:203e frasl:2044 euro:20ac trade:2122 ensp:2002 emsp:2003 thinsp:2009 zwnj:200c zwj:200d ' +
  'lrm:200e rlm:200f OElig:152 oelig:153 Scaron:160 scaron:161 Yuml:178 fnof:192 circ:2c6 tilde:2dc ' +
  'larr:2190 uarr:2191 rarr:2192 darr:2193 harr:2194 minus:2212';

/** Keys as in Python's `html.entities.html5`: every name with ';', the legacy ones also without. */
const ENTITIES = new Map<string, string>();
const addEntity = (name: string, code: number, legacy: boolean) => {
  const c = String.fromCodePoint(code);
  ENTITIES.set(`${name};`, c);
  if (legacy) ENTITIES.set(name, c);
};
LATIN1_NAMES.forEach((name, i) => addEntity(name, 0xa0 + i, true));
for (const [list, legacy] of [[ASCII_NAMES, true], [OTHER_NAMES, false]] as const) {
  for (const pair of list.split(' ')) {
    const [name, hex] = pair.split(':');
    addEntity(name, parseInt(hex, 16), legacy);
  }
}

const CHARREF = /&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)/gu;

/** Python's `html.unescape`. */
export function htmlUnescape(text: string): string {
  return text.replace(CHARREF, (whole, ref: string) => {
    if (ref[0] === '#') {
      const num = ref[1] === 'x' || ref[1] === 'X' ? parseInt(ref.slice(2), 16) : parseInt(ref.slice(1), 10);
      if (num === 0) return '\ufffd';
      if (num === 0x0d) return '\r';
      if (num >= 0x80 && num <= 0x9f) return CP1252[num];
      if ((num >= 0xd800 && num <= 0xdfff) || num > 0x10ffff) return '\ufffd';
      const invalid = (num >= 0x01 && num <= 0x08) || num === 0x0b || (num >= 0x0e && num <= 0x1f) || num === 0x7f ||
        (num >= 0xfdd0 && num <= 0xfdef) || (num & 0xfffe) === 0xfffe;
      return invalid ? '' : String.fromCodePoint(num);
    }
    const hit = ENTITIES.get(ref);
    if (hit !== undefined) return hit;
    // Like browsers, a legacy name may end without ';' inside a longer word ("&copyright").
    for (let n = ref.length - 1; n > 1; n--) {
      const prefix = ENTITIES.get(ref.slice(0, n));
      if (prefix !== undefined) return prefix + ref.slice(n);
    }
    return whole;
  });
}

/**
 * ftfy's `unescape_html`: only entities closed by ';', plus all-caps spellings of lower-case
 * names (P&EACUTE;REZ -> PÉREZ) unless `html.unescape` already reads that spelling.
 */
function ftfyUnescape(text: string): string {
  return text.replace(/&#?[0-9A-Za-z]{1,24};/g, (entity) => {
    if (entity[1] === '#') {
      const decoded = htmlUnescape(entity);
      return decoded.includes(';') ? entity : decoded;
    }
    const name = entity.slice(1);
    const hit = ENTITIES.get(name);
    if (hit !== undefined) return hit;
    const lower = name.toLowerCase();
    const char = ENTITIES.get(lower);
    const allCaps = name === lower.toUpperCase();
    return char !== undefined && allCaps && htmlUnescape(entity) === entity ? char.toUpperCase() : entity;
  });
}

// --- Mojibake (ftfy's fix_encoding, Latin-1 / Windows-1252 only) -------------------------

// ftfy's character categories (badness.py), keeping only characters Latin-1 / Windows-1252 can
// encode: only text made of those can be repaired here.
const BAD = '¤¦¨ª¬¯¸ºƒˆ˜†‡‰';
const LAW = '§¶';
const CURRENCY = '¢£¥€';
const START = '¡©«¿‘‚“„•‹';
const END = '®»”›™';
const NUMERIC = '±²³µ¹¼½¾×÷';
const UPPER = 'À-ÑØÜÝŒŠŸŽ';
const LOWER = 'ß-ñüœšž';
const COMMON = '\\xa0\\xad´·–—’…';
const ARABIC = `[ØÙ][${COMMON}${CURRENCY}${BAD}${NUMERIC}${START}ŸŠ®°µ»]`;

/** ftfy's `is_bad`: character sequences far more likely to be mojibake than intended text. */
const BADNESS = new RegExp([
  '[\\x80-\\x9f]',
  `[${BAD}${LOWER}${UPPER}${START}${END}${CURRENCY}${NUMERIC}${LAW}][${BAD}]`,
  `[a-zA-Z]Þ[${BAD}]`,
  `[${BAD}][${LOWER}${UPPER}${START}${END}${CURRENCY}${NUMERIC}${LAW}]`,
  `[${LOWER}${END}${CURRENCY}${NUMERIC}][${UPPER}]`,
  `[${END}${CURRENCY}${NUMERIC}][${LOWER}]`,
  `[${LOWER}${END}][${CURRENCY}]`,
  `[${PY_SPACE}][${UPPER}][${CURRENCY}]`,
  `[${UPPER}][${NUMERIC}${LAW}]`,
  `[${LOWER}${UPPER}${CURRENCY}${END}][${START}][${NUMERIC}]`,
  `[${LOWER}${UPPER}${CURRENCY}${NUMERIC}${LAW}][${END}][${START}]`,
  `[${CURRENCY}${NUMERIC}][${START}]`,
  `[a-z][${UPPER}][${START}${CURRENCY}]`,
  `[${LOWER}${UPPER}][${START}${END}][\\p{L}\\p{N}_]`,
  '[Œœ][^A-Za-z]',
  `[${UPPER}]°`,
  `[ÂÃÎÐ][€œŠš¢£Ÿž\\xa0\\xad®©°·»${START}${END}–—´]`,
  '×[²³]',
  ARABIC + ARABIC,
  'à[²µ¹¼½¾]',
  '‚Ä[ìîïòôúùû†°¢]',
  '‚[âó][àä°ê]',
  'Ã[\\xa0¡]',
  `[a-z][${PY_SPACE}]?[ÃÂ] `,
  '^[ÃÂ] ',
  `[a-z.,?!${END}]Â[ ${START}${END}]`,
].join('|'), 'u');

// A run of UTF-8 sequences seen through a single-byte code page (ftfy's UTF8_DETECTOR_RE, its
// classes cut down to Latin-1 / 1252 characters as above); a space may stand for a lost \xa0,
// and a run must not continue a longer garble.
const CONT = '\\x80-\\xbf ÆØæøŒœŠšŸŽžƒˆ˜–—‘’‚“”„†‡•…‰‹›€™';
const CONT_STRICT = '\\x80-\\xbfÆØæøŒœŠšŸŽžƒˆ˜†‡‰‹›€™';
const UTF8_RUN = new RegExp(
  `(?<![${CONT_STRICT}])(?:[\\xc2-\\xdfŠŽ][${CONT}]|[\\xe0-\\xef][${CONT}]{2}|[ðóš][${CONT}]{3})+`, 'gu');

// Bytes (as a string of char codes 0-255) that would be UTF-8 had a \xa0 not become a space.
const ALTERED_UTF8 = new RegExp('[\\xc2\\xc3\\xc5\\xce\\xd0\\xd9] |[\\xe2\\xe3] [\\x80-\\x84\\x86-\\x9f\\xa1-\\xbf]' +
  '|[\\xe0-\\xe3][\\x80-\\x84\\x86-\\x9f\\xa1-\\xbf] |\\xf0 [\\x80-\\xbf]{2}|\\xf0[\\x80-\\xbf] [\\x80-\\xbf]|\\xf0[\\x80-\\xbf]{2} ', 'g');
// "Ã la mode" is "à la mode", not "àla mode" (Portuguese "às", "àquele"... excepted).
const A_GRAVE_WORD = /\xc3 (?! |quele|quela|quilo|s )/g;

function restoreByteA0(bytes: string): string {
  if (bytes.search(ALTERED_UTF8) < 0) return bytes;
  return bytes.replace(A_GRAVE_WORD, '\xc3\xa0 ').replace(ALTERED_UTF8, (m) => m.replace(' ', '\xa0'));
}

/** The text's bytes in a single-byte code page (one char per byte), or null if it has other characters. */
function encodeSingleByte(text: string, table: string): string | null {
  let bytes = '';
  for (const c of text) {
    const b = table.indexOf(c);
    if (b < 0) return null;
    bytes += String.fromCharCode(b);
  }
  return bytes;
}

function decodeUtf8(bytes: string): string | null {
  try {
    return UTF8.decode(Buffer.from(bytes, 'latin1'));
  } catch {
    return null;
  }
}

/** C1 controls are almost always Windows-1252 bytes read as Latin-1. */
const fixC1 = (text: string) => text.replace(/[\x80-\x9f]/g, (c) => CP1252[c.charCodeAt(0)]);

function fixEncodingStep(text: string): string {
  if (/^[\0-\x7f]*$/.test(text) || !BADNESS.test(text)) return text;
  for (const table of [LATIN1, CP1252]) {
    const bytes = encodeSingleByte(text, table);
    const fixed = bytes === null ? null : decodeUtf8(restoreByteA0(bytes));
    if (fixed !== null) return fixed;
  }
  // Mojibake embedded in otherwise fine text: fix each run that is itself bad.
  const fixed = text.replace(UTF8_RUN, (run) => (run !== text && BADNESS.test(run) ? fixEncoding(run) : run));
  return fixed !== text ? fixed : fixC1(text);
}

function fixEncoding(text: string): string {
  for (;;) {
    const fixed = fixEncodingStep(text);
    if (fixed === text) return text;
    text = fixed;
  }
}

// --- The remaining ftfy fixers ---------------------------------------------------------

const LIGATURES: Record<string, string> = {
  'Ĳ': 'IJ', 'ĳ': 'ij', 'ŉ': 'ʼn', 'Ǳ': 'DZ', 'ǲ': 'Dz', 'ǳ': 'dz', 'Ǆ': 'DŽ', 'ǅ': 'Dž', 'ǆ': 'dž',
  'Ǉ': 'LJ', 'ǈ': 'Lj', 'ǉ': 'lj', 'Ǌ': 'NJ', 'ǋ': 'Nj', 'ǌ': 'nj',
  'ﬀ': 'ff', 'ﬁ': 'fi', 'ﬂ': 'fl', 'ﬃ': 'ffi', 'ﬄ': 'ffl', 'ﬅ': 'ſt', 'ﬆ': 'st',
};
const LIGATURE_RE = new RegExp(`[${Object.keys(LIGATURES).join('')}]`, 'g');

function fixSegment(text: string, unescape: boolean): string {
  for (;;) {
    const orig = text;
    if (unescape) text = ftfyUnescape(text);
    text = fixC1(fixEncoding(text))
      .replace(LIGATURE_RE, (c) => LIGATURES[c])
      // Full-width ASCII and half-width kana/Hangul to their normal forms.
      .replace(/[\u3000\uff01-\uffef]/g, (c) => (c === '\u3000' ? ' ' : c.normalize('NFKC')))
      .replace(/[\u02bc\u2018-\u201b]/g, "'")
      .replace(/[\u201c-\u201f]/g, '"')
      .replace(/\r\n|[\r\u2028\u2029\x85]/g, '\n')
      .replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd')
      .replace(/\x1b\[[\p{Nd};]*[a-zA-Z]/gu, '')
      .replace(/[\x00-\x08\x0b\x0e-\x1f\x7f\u206a-\u206f\ufeff\ufff9-\ufffc]/g, '')
      .normalize('NFC');
    if (text === orig) return text;
  }
}

/** `ftfy.fix_text` with its default settings (see the module comment for what is covered). */
export function fixText(text: string): string {
  // ftfy fixes line by line; from the first line holding '<' on, it takes the text for HTML
  // and leaves entities alone.
  let unescape = true;
  return text.split(/(?<=\n)/).map((line) => {
    if (line.includes('<')) unescape = false;
    return fixSegment(line, unescape);
  }).join('');
}

const SPACES = new RegExp(`[${PY_SPACE}]+`, 'gu');

/** OpenAI's `whitespace_clean(basic_clean(text)).lower()`. */
export function cleanText(text: string): string {
  return htmlUnescape(htmlUnescape(fixText(text))).replace(SPACES, ' ').replace(/^ | $/g, '').toLowerCase();
}
