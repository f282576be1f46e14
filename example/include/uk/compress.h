/* ukcompress: LZSS with a 4 KiB window and hash chains. */
#ifndef UK_COMPRESS_H
#define UK_COMPRESS_H

#include <uk/essentials.h>

/* Worst case output size for n input bytes. */
#define UK_LZSS_BOUND(n) ((n) + ((n) + 7) / 8 + 16)

/* Returns the compressed size, or -1 if cap is too small or memory is short. */
long uk_lzss_compress(const uint8_t *in, size_t n, uint8_t *out, size_t cap);
/* Returns the decompressed size, or -1 on corrupt input / small cap. */
long uk_lzss_decompress(const uint8_t *in, size_t n, uint8_t *out, size_t cap);

/* Run-length encoding, a second (simpler) codec. */
long uk_rle_compress(const uint8_t *in, size_t n, uint8_t *out, size_t cap);
long uk_rle_decompress(const uint8_t *in, size_t n, uint8_t *out, size_t cap);

#endif
