/*
 * xbzrle test guest: a tiny multiboot kernel that dirties RAM in controlled, deterministic patterns
 * and reports progress on COM1 (0x3f8). Built with the system gcc:
 *   gcc -m32 -ffreestanding -nostdlib -fno-pic -static -T linker.ld boot.S guest.c
 *
 * Command line (QEMU -append), all optional, `key=value` separated by spaces:
 *   workload=sparse|sweep|hotset|text|idle   (default sparse)
 *   mem=MiB      size of the workload region, placed at 4 MiB physical (default 32, clamped to RAM)
 *   seed=N       PRNG seed for the fill and the workload (default 1)
 *   rate=N|max   operations per second, paced by the PIT at 100 Hz (default 2000); max = unpaced
 *   period=ms    length of one pass when paced (default 500)
 *   ops=N        operations per pass when rate=max (default 65536)
 *   hot=N        hot set size in pages for workload=hotset (default 256)
 *   verify=1     also print a checksum of the whole region after every pass ("memsum")
 *
 * Serial protocol (one line each, '\n' terminated):
 *   xbzrle-guest boot <cmdline>
 *   xbzrle-guest ready workload=W mem=M seed=S rate=R period=P base=0x00400000 pages=N fill=XXXXXXXX
 *   pass N checksum XXXXXXXX [memsum XXXXXXXX]
 *   xbzrle-guest fault            (CPU exception; the guest stops)
 * The sequence of operations depends only on the command line, so "pass N checksum" is the same in every
 * run with the same parameters, migrated or not.
 */

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define REGION_BASE 0x400000u
#define PAGE 4096u
#define HZ 100u
#define PIT_HZ 1193182u
#define REC 128u

volatile u32 ticks;

extern void isr_timer(void);
extern void isr_ignore(void);
extern void isr_fault(void);
extern char __kernel_end[];

/* ---------- libc bits gcc may call even in freestanding mode ---------- */

void *memset(void *d, int c, unsigned n) {
  u8 *p = d;
  while (n--) *p++ = (u8)c;
  return d;
}

void *memcpy(void *d, const void *s, unsigned n) {
  u8 *p = d;
  const u8 *q = s;
  while (n--) *p++ = *q++;
  return d;
}

static void copy_words(u32 *d, const u32 *s, u32 n) {
  __asm__ volatile("rep movsl" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
}

/* ---------- port I/O, serial ---------- */

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) {
  u8 v;
  __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}

static void serial_init(void) {
  outb(0x3f9, 0x00);
  outb(0x3fb, 0x80);
  outb(0x3f8, 0x01); /* 115200 */
  outb(0x3f9, 0x00);
  outb(0x3fb, 0x03); /* 8N1 */
  outb(0x3fa, 0xc7);
  outb(0x3fc, 0x03);
}

static void sputc(char c) {
  for (u32 i = 0; i < 100000 && !(inb(0x3fd) & 0x20); i++) {
  }
  outb(0x3f8, (u8)c);
}

static void sputs(const char *s) {
  while (*s) sputc(*s++);
}

static void sputhex(u32 v) {
  static const char hex[] = "0123456789abcdef";
  for (int i = 28; i >= 0; i -= 4) sputc(hex[(v >> i) & 15]);
}

static void sputdec(u32 v) {
  char buf[12];
  int n = 0;
  do {
    buf[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (n) sputc(buf[--n]);
}

void fault_handler(void) { sputs("\nxbzrle-guest fault\n"); }

/* ---------- interrupts: IDT, PIC, PIT ---------- */

struct idt_entry {
  u16 off_lo;
  u16 sel;
  u8 zero;
  u8 type;
  u16 off_hi;
} __attribute__((packed));

struct idt_ptr {
  u16 limit;
  u32 base;
} __attribute__((packed));

static struct idt_entry idt[256];

static void set_gate(int n, void (*h)(void)) {
  u32 a = (u32)h;
  idt[n].off_lo = (u16)(a & 0xffff);
  idt[n].sel = 0x08;
  idt[n].zero = 0;
  idt[n].type = 0x8e;
  idt[n].off_hi = (u16)(a >> 16);
}

static void interrupts_init(void) {
  for (int i = 0; i < 256; i++) set_gate(i, i < 32 ? isr_fault : isr_ignore);
  set_gate(0x20, isr_timer);
  struct idt_ptr p = {sizeof(idt) - 1, (u32)idt};
  __asm__ volatile("lidt %0" : : "m"(p));

  /* remap the PICs to 0x20/0x28, unmask only IRQ0 */
  outb(0x20, 0x11);
  outb(0xa0, 0x11);
  outb(0x21, 0x20);
  outb(0xa1, 0x28);
  outb(0x21, 0x04);
  outb(0xa1, 0x02);
  outb(0x21, 0x01);
  outb(0xa1, 0x01);
  outb(0x21, 0xfe);
  outb(0xa1, 0xff);

  /* PIT channel 0, rate generator, HZ */
  u32 div = PIT_HZ / HZ;
  outb(0x43, 0x34);
  outb(0x40, (u8)(div & 0xff));
  outb(0x40, (u8)(div >> 8));
  __asm__ volatile("sti");
}

static u32 seen_tick;

/* Sleep until the next timer tick (missed ticks are skipped, not caught up). */
static void wait_tick(void) {
  for (;;) {
    __asm__ volatile("cli");
    if (ticks != seen_tick) {
      seen_tick = ticks;
      __asm__ volatile("sti");
      return;
    }
    __asm__ volatile("sti; hlt");
  }
}

/* ---------- PRNG: xoshiro128** seeded by splitmix32 ---------- */

struct rng {
  u32 s[4];
};

static inline u32 rotl(u32 x, int k) { return (x << k) | (x >> (32 - k)); }

static u32 rng_next(struct rng *r) {
  u32 *s = r->s;
  u32 result = rotl(s[1] * 5, 7) * 9;
  u32 t = s[1] << 9;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 11);
  return result;
}

static void rng_seed(struct rng *r, u32 seed) {
  for (int i = 0; i < 4; i++) {
    u32 z = (seed += 0x9e3779b9u);
    z = (z ^ (z >> 16)) * 0x85ebca6bu;
    z = (z ^ (z >> 13)) * 0xc2b2ae35u;
    r->s[i] = z ^ (z >> 16);
  }
  if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3])) r->s[0] = 1;
}

/* uniform in [0, n) */
static inline u32 rng_below(struct rng *r, u32 n) { return (u32)(((u64)rng_next(r) * n) >> 32); }

static inline u32 mix(u32 h, u32 v) {
  h ^= v;
  h *= 0x01000193u;
  return h ^ (h >> 15);
}

/* ---------- configuration ---------- */

enum { W_SPARSE, W_SWEEP, W_HOTSET, W_TEXT, W_IDLE };
static const char *const workload_names[] = {"sparse", "sweep", "hotset", "text", "idle"};

static struct {
  u32 workload;
  u32 mem_mib;
  u32 seed;
  u32 rate;
  u32 period;
  u32 ops;
  u32 hot;
  u32 verify;
} cfg = {W_SPARSE, 32, 1, 2000, 500, 65536, 256, 0};

static int streq_n(const char *a, const char *b, u32 n) {
  for (u32 i = 0; i < n; i++)
    if (a[i] != b[i]) return 0;
  return b[n] == 0;
}

static u32 parse_num(const char *s, u32 n) {
  u32 v = 0;
  if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    for (u32 i = 2; i < n; i++) {
      char c = s[i];
      u32 d = c >= '0' && c <= '9' ? (u32)(c - '0') : c >= 'a' && c <= 'f' ? (u32)(c - 'a' + 10) : c >= 'A' && c <= 'F' ? (u32)(c - 'A' + 10) : 0;
      v = v * 16 + d;
    }
    return v;
  }
  for (u32 i = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++) v = v * 10 + (u32)(s[i] - '0');
  return v;
}

static void parse_cmdline(const char *c) {
  while (*c) {
    while (*c == ' ') c++;
    const char *key = c;
    while (*c && *c != ' ' && *c != '=') c++;
    u32 klen = (u32)(c - key);
    if (*c != '=') continue;
    c++;
    const char *val = c;
    while (*c && *c != ' ') c++;
    u32 vlen = (u32)(c - val);
    if (streq_n(key, "workload", klen)) {
      for (u32 i = 0; i < 5; i++)
        if (streq_n(val, workload_names[i], vlen)) cfg.workload = i;
    } else if (streq_n(key, "mem", klen)) {
      cfg.mem_mib = parse_num(val, vlen);
    } else if (streq_n(key, "seed", klen)) {
      cfg.seed = parse_num(val, vlen);
    } else if (streq_n(key, "rate", klen)) {
      cfg.rate = (vlen == 3 && val[0] == 'm' && val[1] == 'a' && val[2] == 'x') ? 0 : parse_num(val, vlen);
    } else if (streq_n(key, "period", klen)) {
      cfg.period = parse_num(val, vlen);
    } else if (streq_n(key, "ops", klen)) {
      cfg.ops = parse_num(val, vlen);
    } else if (streq_n(key, "hot", klen)) {
      cfg.hot = parse_num(val, vlen);
    } else if (streq_n(key, "verify", klen)) {
      cfg.verify = parse_num(val, vlen);
    }
  }
}

/* ---------- region fill ---------- */

static u8 *region;
static u32 region_bytes;
static u32 region_pages;

#define NTEXT 8
static u32 text_pool[NTEXT][PAGE / 4];

static const char *const words[] = {
    "the",     "migration", "stream",  "page",   "dirty",   "bitmap", "guest",  "memory", "record", "index",
    "select",  "from",      "where",   "update", "insert",  "value",  "null",   "order",  "commit", "buffer",
    "kernel",  "socket",    "request", "reply",  "session", "cache",  "entry",  "table",  "row",    "column",
    "account", "balance",   "status",  "open",   "closed",  "error",  "warning", "info",  "debug",  "trace",
};
#define NWORDS (sizeof(words) / sizeof(words[0]))

static void make_text_page(struct rng *r, u8 *p) {
  u32 i = 0;
  u32 col = 0;
  while (i < PAGE) {
    const char *w = words[rng_below(r, NWORDS)];
    while (*w && i < PAGE) {
      p[i++] = (u8)*w++;
      col++;
    }
    if (i >= PAGE) break;
    if (col > 60 + rng_below(r, 20)) {
      p[i++] = '\n';
      col = 0;
    } else {
      p[i++] = rng_below(r, 8) == 0 ? ',' : ' ';
      col++;
    }
  }
}

static void put_dec_fixed(u8 *p, u32 width, u32 v) {
  for (u32 i = width; i > 0; i--) {
    p[i - 1] = (u8)('0' + v % 10);
    v /= 10;
  }
}

/* Text/database records, 128 bytes each:
 * "ID=########;ACCT=##########;BAL=############;TS=##########;ST=OPEN;NOTE=<words>\n" */
#define F_ID 3
#define F_ACCT 17
#define F_BAL 32
#define F_TS 48
#define F_ST 62
#define F_NOTE 72

static void make_record(struct rng *r, u8 *p, u32 id) {
  static const char tmpl[] = "ID=00000000;ACCT=0000000000;BAL=000000000000;TS=0000000000;ST=OPEN;NOTE=";
  for (u32 i = 0; i < sizeof(tmpl) - 1; i++) p[i] = (u8)tmpl[i];
  put_dec_fixed(p + F_ID, 8, id);
  put_dec_fixed(p + F_ACCT, 10, rng_next(r) % 1000000000u);
  put_dec_fixed(p + F_BAL, 12, rng_next(r) % 100000000u);
  put_dec_fixed(p + F_TS, 10, 0);
  u32 i = F_NOTE;
  while (i < REC - 1) {
    const char *w = words[rng_below(r, NWORDS)];
    while (*w && i < REC - 1) p[i++] = (u8)*w++;
    if (i < REC - 1) p[i++] = ' ';
  }
  p[REC - 1] = '\n';
}

static void fill_page(struct rng *r, u32 pageno) {
  u32 *p = (u32 *)(region + pageno * PAGE);
  if (cfg.workload == W_TEXT) {
    for (u32 k = 0; k < PAGE / REC; k++) make_record(r, (u8 *)p + k * REC, pageno * (PAGE / REC) + k);
    return;
  }
  u32 kind = rng_below(r, 100);
  if (kind < 35) {
    /* structured: 16-byte records {id, small value, pointer, flags} */
    u32 id = pageno * 256;
    for (u32 i = 0; i < PAGE / 4; i += 4) {
      u32 x = rng_next(r);
      p[i] = ++id;
      p[i + 1] = x & 0xffff;
      p[i + 2] = REGION_BASE + ((x >> 4) & 0x00fffff0u);
      p[i + 3] = 0x00010000u | (x >> 29);
    }
  } else if (kind < 65) {
    /* text: a pool page with a few patched words */
    copy_words(p, text_pool[rng_below(r, NTEXT)], PAGE / 4);
    for (u32 k = 0; k < 4; k++) p[rng_below(r, PAGE / 4)] = 0x20202020u ^ (rng_next(r) & 0x0f0f0f0fu);
  } else if (kind < 80) {
    /* incompressible */
    for (u32 i = 0; i < PAGE / 4; i++) p[i] = rng_next(r);
  } else {
    /* mostly zero, never all zero */
    for (u32 i = 0; i < PAGE / 4; i++) p[i] = 0;
    p[0] = 0x53504152u ^ pageno;
    for (u32 i = 1 + rng_below(r, 16); i < PAGE / 4; i += 16 + rng_below(r, 48)) p[i] = rng_next(r) | 1;
  }
}

static u32 region_sum(void) {
  const u32 *p = (const u32 *)region;
  u32 a = 1, b = 0;
  for (u32 i = 0; i < region_bytes / 4; i++) {
    a += p[i];
    b += a;
  }
  return a ^ rotl(b, 16);
}

/* ---------- workloads ---------- */

static struct rng wrng;
static u32 checksum = 0x811c9dc5u;
static u32 op_count;
static u32 sweep_cursor, sweep_lane;
static u32 hot_stride;

static void bump_decimal(u8 *p, u32 width, u32 add) {
  for (u32 i = width; i > 0 && add; i--) {
    u32 d = (u32)(p[i - 1] - '0') + add % 10;
    add /= 10;
    if (d >= 10) {
      d -= 10;
      add += 1;
    }
    p[i - 1] = (u8)('0' + d);
  }
}

static void run_ops(u32 n) {
  struct rng *r = &wrng;
  u32 h = checksum;
  switch (cfg.workload) {
  case W_SPARSE: {
    u32 slots = region_bytes / 8;
    for (u32 k = 0; k < n; k++) {
      u32 off = rng_below(r, slots) * 8;
      volatile u32 *p = (volatile u32 *)(region + off);
      u32 x = rng_next(r);
      if (x & 1) {
        p[0] += 1 + ((x >> 1) & 0xff); /* small in-place change */
      } else {
        p[0] = rng_next(r);
        p[1] = x;
      }
      h = mix(mix(h, off), p[0]);
    }
    break;
  }
  case W_SWEEP:
    for (u32 k = 0; k < n; k++) {
      volatile u8 *b = region + sweep_cursor * PAGE + sweep_lane;
      *b = (u8)(*b + 1 + (op_count & 0x3f));
      h = mix(h, (sweep_cursor << 12) | *b);
      if (++sweep_cursor == region_pages) {
        sweep_cursor = 0;
        sweep_lane = (sweep_lane + 67) & (PAGE - 1);
      }
    }
    break;
  case W_HOTSET:
    for (u32 k = 0; k < n; k++) {
      u32 page = rng_below(r, cfg.hot) * hot_stride;
      u32 off = page * PAGE + rng_below(r, PAGE / 16) * 16;
      volatile u32 *p = (volatile u32 *)(region + off);
      p[0] += 1;
      p[1] = rng_next(r);
      p[2] ^= op_count;
      p[3] = op_count + k;
      h = mix(mix(h, off), p[1]);
    }
    break;
  case W_TEXT: {
    u32 recs = region_bytes / REC;
    for (u32 k = 0; k < n; k++) {
      u32 rec = rng_below(r, recs);
      u8 *p = region + rec * REC;
      u32 x = rng_next(r);
      bump_decimal(p + F_BAL, 12, x % 10000u);
      put_dec_fixed(p + F_TS, 10, op_count + k);
      if ((x >> 20) % 16 == 0) {
        static const char st[3][5] = {"OPEN", "HOLD", "SHUT"};
        const char *s = st[(x >> 24) % 3];
        for (u32 i = 0; i < 4; i++) p[F_ST + i] = (u8)s[i];
      }
      h = mix(mix(h, rec), x);
    }
    break;
  }
  default:
    break;
  }
  op_count += n;
  checksum = h;
}

/* ---------- main ---------- */

struct multiboot_info {
  u32 flags;
  u32 mem_lower;
  u32 mem_upper;
  u32 boot_device;
  u32 cmdline;
};

void kmain(u32 magic, const struct multiboot_info *mbi) {
  serial_init();
  const char *cmdline = "";
  u32 ram_top = 0;
  if (magic == 0x2badb002u) {
    if (mbi->flags & 4) cmdline = (const char *)mbi->cmdline;
    if (mbi->flags & 1) ram_top = 0x100000u + mbi->mem_upper * 1024u;
  }
  sputs("xbzrle-guest boot ");
  sputs(cmdline);
  sputc('\n');
  parse_cmdline(cmdline);

  if (ram_top <= REGION_BASE + PAGE) {
    sputs("xbzrle-guest error not enough RAM\n");
    for (;;) __asm__ volatile("cli; hlt");
  }
  u32 avail_mib = (ram_top - REGION_BASE) >> 20;
  region = (u8 *)REGION_BASE;
  if (cfg.mem_mib == 0 || cfg.mem_mib > avail_mib) {
    sputs("xbzrle-guest warning mem clamped to ");
    sputdec(avail_mib);
    sputc('\n');
    cfg.mem_mib = avail_mib;
  }
  region_bytes = cfg.mem_mib << 20;
  region_pages = region_bytes / PAGE;
  if (cfg.hot == 0) cfg.hot = 1;
  if (cfg.hot > region_pages) cfg.hot = region_pages;
  hot_stride = region_pages / cfg.hot;
  if (cfg.period < 10) cfg.period = 10;
  if (cfg.period > 4000) cfg.period = 4000;
  if (cfg.rate > 1000000) cfg.rate = 1000000;

  struct rng frng;
  rng_seed(&frng, cfg.seed);
  for (u32 i = 0; i < NTEXT; i++) make_text_page(&frng, (u8 *)text_pool[i]);
  for (u32 pg = 0; pg < region_pages; pg++) fill_page(&frng, pg);
  rng_seed(&wrng, cfg.seed ^ 0x5bd1e995u);

  sputs("xbzrle-guest ready workload=");
  sputs(workload_names[cfg.workload]);
  sputs(" mem=");
  sputdec(cfg.mem_mib);
  sputs(" seed=");
  sputdec(cfg.seed);
  sputs(" rate=");
  if (cfg.rate) sputdec(cfg.rate);
  else sputs("max");
  sputs(" period=");
  sputdec(cfg.period);
  sputs(" base=0x");
  sputhex(REGION_BASE);
  sputs(" pages=");
  sputdec(region_pages);
  sputs(" fill=");
  sputhex(region_sum());
  sputc('\n');

  interrupts_init();

  u32 ticks_per_pass = cfg.period * HZ / 1000;
  if (ticks_per_pass == 0) ticks_per_pass = 1;
  u32 ops_per_pass = cfg.rate ? cfg.rate * cfg.period / 1000u : cfg.ops;
  if (ops_per_pass == 0) ops_per_pass = 1;
  u32 per_tick = (ops_per_pass + ticks_per_pass - 1) / ticks_per_pass;
  int paced = cfg.rate != 0 || cfg.workload == W_IDLE;

  seen_tick = ticks;
  for (u32 pass = 1;; pass++) {
    if (!paced) {
      run_ops(ops_per_pass);
    } else {
      u32 done = 0;
      for (u32 t = 0; t < ticks_per_pass; t++) {
        wait_tick();
        if (cfg.workload == W_IDLE) continue;
        u32 n = ops_per_pass - done;
        if (n > per_tick) n = per_tick;
        run_ops(n);
        done += n;
      }
    }
    sputs("pass ");
    sputdec(pass);
    sputs(" checksum ");
    sputhex(checksum);
    if (cfg.verify) {
      sputs(" memsum ");
      sputhex(region_sum());
    }
    sputc('\n');
  }
}
