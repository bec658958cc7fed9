# Warnings and sanitizers shared by every ONN target (applied through onn_compile_options).
add_library(onn_compile_options INTERFACE)
target_compile_options(onn_compile_options INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wno-unused-parameter>
  $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<BOOL:${ONN_WERROR}>>:-Werror>
  $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -Xcompiler=-Wall>)
if(ONN_SANITIZE)
  # Host code only: device code and nvcc-compiled host stubs stay uninstrumented.
  string(REPLACE ";" "," _onn_san "${ONN_SANITIZE}")
  target_compile_options(onn_compile_options INTERFACE
    $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=${_onn_san} -fno-omit-frame-pointer -fno-sanitize-recover=all>)
  target_link_options(onn_compile_options INTERFACE -fsanitize=${_onn_san})
endif()
install(TARGETS onn_compile_options EXPORT onnTargets)
