/* ukhash: CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320). */
#include <uk/hash.h>

static uint32_t crc_table[256];
static int crc_table_ready;

static void crc_table_init(void)
{
	uint32_t i, j, c;

	for (i = 0; i < 256; i++) {
		c = i;
		for (j = 0; j < 8; j++)
			c = (c & 1) ? (c >> 1) ^ 0xEDB88320U : c >> 1;
		crc_table[i] = c;
	}
	crc_table_ready = 1;
}

uint32_t uk_crc32(uint32_t crc, const void *data, size_t len)
{
	const uint8_t *p = data;

	if (!crc_table_ready)
		crc_table_init();
	crc = ~crc;
	while (len--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}
