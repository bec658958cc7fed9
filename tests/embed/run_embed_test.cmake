# Installs the ONN build into a private prefix, then configures, builds and runs an example
# project (ONN_EXAMPLE_DIR, its binary EXAMPLE_BINARY) against it with find_package(onn), as an
# outside project would; its output must match EXPECT.
file(REMOVE_RECURSE "${WORK_DIR}")
execute_process(COMMAND ${CMAKE_COMMAND} --install "${ONN_BUILD_DIR}" --prefix "${WORK_DIR}/prefix"
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed (${rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S "${ONN_EXAMPLE_DIR}" -B "${WORK_DIR}/build" -G "${GENERATOR}"
                        -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix
                        -DCMAKE_BUILD_TYPE=Release
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring ${ONN_EXAMPLE_DIR} against the installed package failed (${rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build "${WORK_DIR}/build" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building ${ONN_EXAMPLE_DIR} failed (${rc})")
endif()
execute_process(COMMAND "${WORK_DIR}/build/${EXAMPLE_BINARY}" "${WORK_DIR}/x.safetensors"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out)
message(STATUS "${out}")
if(NOT rc EQUAL 0 OR NOT out MATCHES "${EXPECT}")
  message(FATAL_ERROR "${ONN_EXAMPLE_DIR} did not run correctly (${rc}): ${out}")
endif()
