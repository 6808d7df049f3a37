/* The driver of scripts/sizes.sh: the public functions of one part of
   opstate.h, as a firmware would reference them, so that a link with
   --gc-sections keeps exactly that part and what it calls. Each
   -DSIZE_<PART> adds a part (several make one link); the linker's entry
   symbol is the table below, which lives in .data, so it adds nothing to
   the .text the script measures. Not a program: nothing runs it.

     SIZE_DECIDE    restore decision, event time fallback, reason names
     SIZE_RESUME    resume-window check and live gap classifier, their names
     SIZE_HWM       high-water mark
     SIZE_CODEC     event encode / decode, CRC32C
     SIZE_IDS       ids: time-ordered, from content, text form
     SIZE_RESULTS   result names, version
     SIZE_DEDUP     dedup window and its serialisation
     SIZE_SUBJECTS  tokens, key escape, subject build / filter / parse
     SIZE_JSON      JSON rendering and validation
     SIZE_FLASH     the power-loss-safe store over raw flash (>>flash)
     SIZE_KV        the KV fold (allocates: built without OPSTATE_NO_MALLOC)
     SIZE_SNAPSHOT  snapshot codec (allocates)
     SIZE_CONSUMER  the consumer driver (allocates); it calls the log and
                    store through interfaces, so no log or store is in it
     SIZE_MEMLOG    the memory log and store (allocate) */
#include "../../opstate.h"

typedef void (*size_fn)(void);
#define SIZE_FN(f) (size_fn)(f)

size_fn size_roots[] = {
#ifdef SIZE_DECIDE
    SIZE_FN(opstate_decide_restore), SIZE_FN(opstate_event_time), SIZE_FN(opstate_reason_str),
    SIZE_FN(opstate_reason_name),
#endif
#ifdef SIZE_RESUME
    SIZE_FN(opstate_resume_check), SIZE_FN(opstate_resume_state_str), SIZE_FN(opstate_gap_classify),
    SIZE_FN(opstate_gap_kind_str),
#endif
#ifdef SIZE_HWM
    SIZE_FN(opstate_hwm_init), SIZE_FN(opstate_hwm_deliver), SIZE_FN(opstate_hwm_ack),
    SIZE_FN(opstate_hwm_in_flight),
#endif
#ifdef SIZE_CODEC
    SIZE_FN(opstate_event_encode), SIZE_FN(opstate_event_decode), SIZE_FN(opstate_crc32c),
#endif
#ifdef SIZE_IDS
    SIZE_FN(opstate_id_time_ordered), SIZE_FN(opstate_id_from_content), SIZE_FN(opstate_id_to_text),
    SIZE_FN(opstate_id_from_text), SIZE_FN(opstate_id_equal),
#endif
#ifdef SIZE_RESULTS
    SIZE_FN(opstate_result_str), SIZE_FN(opstate_version_number),
#endif
#ifdef SIZE_DEDUP
    SIZE_FN(opstate_dedup_storage_size), SIZE_FN(opstate_dedup_init), SIZE_FN(opstate_dedup_contains),
    SIZE_FN(opstate_dedup_insert), SIZE_FN(opstate_dedup_clear), SIZE_FN(opstate_dedup_encode),
    SIZE_FN(opstate_dedup_decode),
#endif
#ifdef SIZE_SUBJECTS
    SIZE_FN(opstate_token_validate), SIZE_FN(opstate_prefix_validate), SIZE_FN(opstate_key_escape),
    SIZE_FN(opstate_key_unescape), SIZE_FN(opstate_subject_build), SIZE_FN(opstate_subject_filter),
    SIZE_FN(opstate_subject_parse),
#endif
#ifdef SIZE_JSON
    SIZE_FN(opstate_event_to_json), SIZE_FN(opstate_json_valid),
#endif
#ifdef SIZE_FLASH
    SIZE_FN(opstate_flash_open), SIZE_FN(opstate_flash_read_meta), SIZE_FN(opstate_flash_load),
    SIZE_FN(opstate_flash_entry_size), SIZE_FN(opstate_flash_commit_size), SIZE_FN(opstate_flash_plan),
    SIZE_FN(opstate_flash_begin), SIZE_FN(opstate_flash_put), SIZE_FN(opstate_flash_commit),
    SIZE_FN(opstate_flash_drop), SIZE_FN(opstate_flash_get_stats),
#endif
#ifdef SIZE_KV
    SIZE_FN(opstate_kv_create), SIZE_FN(opstate_kv_reserve), SIZE_FN(opstate_kv_destroy),
    SIZE_FN(opstate_kv_put), SIZE_FN(opstate_kv_delete), SIZE_FN(opstate_kv_restore), SIZE_FN(opstate_kv_get),
    SIZE_FN(opstate_kv_count), SIZE_FN(opstate_kv_has_base), SIZE_FN(opstate_kv_memory),
    SIZE_FN(opstate_kv_iterate), SIZE_FN(opstate_kv_dirty_iterate), SIZE_FN(opstate_kv_dirty_count),
    SIZE_FN(opstate_kv_mark_clean), SIZE_FN(opstate_kv_forget_clean), SIZE_FN(opstate_kv_clear),
    SIZE_FN(opstate_kv_event_key), SIZE_FN(opstate_apply_default),
#endif
#ifdef SIZE_SNAPSHOT
    SIZE_FN(opstate_schema_check), SIZE_FN(opstate_snapshot_encode), SIZE_FN(opstate_snapshot_decode),
#endif
#ifdef SIZE_CONSUMER
    SIZE_FN(opstate_consumer_open), SIZE_FN(opstate_consumer_poll), SIZE_FN(opstate_consumer_ack),
    SIZE_FN(opstate_consumer_flush), SIZE_FN(opstate_consumer_close), SIZE_FN(opstate_consumer_kv),
    SIZE_FN(opstate_consumer_position), SIZE_FN(opstate_consumer_get_status),
#endif
#ifdef SIZE_MEMLOG
    SIZE_FN(opstate_memlog_create), SIZE_FN(opstate_memlog_destroy), SIZE_FN(opstate_memlog_iface),
    SIZE_FN(opstate_memstore_create), SIZE_FN(opstate_memstore_destroy), SIZE_FN(opstate_memstore_iface),
#endif
    SIZE_FN(0) /* (no empty initialiser in C) */
};
